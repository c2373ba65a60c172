"""Open a run collection, find a run, load its trained LFADS weights and plot them.

With --synthetic it first builds (once) a small collection "demo" under ROOT with
synthetic sessions and tiny random stand-ins for trained LFADS models (as `lfads-tools
demo` does); otherwise it reads an existing collection written by lfads-run-manager
(MATLAB) or lfads_tools. The defaults open what --synthetic builds.

    python inspect_lfads_run.py --synthetic
    python inspect_lfads_run.py            # the same collection, once built
    python inspect_lfads_run.py --root ~/lfads/runs --name exampleRun --spec all --params 0

MATLAB equivalent:  rc = LFADS.RunCollection(root, name, dc); run = rc.findRuns('all', 1);
                    mtp = run.loadModelTrainedParams();
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lds.errors import LfadsToolsError, ValidationError, require
from lds.fileio import atomic_path
from lfads_tools import RunCollection

HERE = Path(__file__).resolve().parent


def open_collection(args) -> RunCollection:
    if args.synthetic:
        from lfads_tools.demo import build_demo_collection

        if args.root.name != "runs" or args.name != "demo":
            raise ValidationError(f"--synthetic builds the collection demo in a folder named runs (it puts the "
                                  f"datasets beside it); got --root {args.root} --name {args.name}")
        if not (args.root / "demo").is_dir():
            print(f"building a synthetic run collection in {args.root / 'demo'} ...")
            build_demo_collection(args.root.parent)
    return RunCollection.from_disk(args.root, args.name)


def heatmap(ax, matrix, title) -> None:
    from matplotlib.ticker import MaxNLocator

    limit = float(np.abs(matrix).max()) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_title(f"{title}  [{matrix.shape[0]}x{matrix.shape[1]}]", fontsize=9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true",
                        help="first build the synthetic collection demo in ROOT, unless it is there already")
    parser.add_argument("--root", type=Path, default=HERE / "lfads_runs" / "runs",
                        help="root folder of the collections (default: lfads_runs/runs beside this script; "
                             "a folder you give is relative to the current folder)")
    parser.add_argument("--name", default="demo", help="run collection name (default demo)")
    parser.add_argument("--spec", default="all", help="run spec name (default all)")
    parser.add_argument("--params", type=int, default=0, help="0-based parameter set index (default 0)")
    parser.add_argument("--no-show", action="store_true", help="write a PNG instead of opening windows")
    parser.add_argument("--png", type=Path, default=HERE / "models" / "lfads_weights.png",
                        help="PNG to write with --no-show (default: models/lfads_weights.png beside this script)")
    args = parser.parse_args(argv)

    try:
        matplotlib = require("matplotlib", "plot")
        if args.no_show:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        collection = open_collection(args)
        print(collection)
        print(collection.runs_table())
        run = collection.find_runs(args.spec, args.params)
        print(run)
        model = run.load_model_trained_params()
    except LfadsToolsError as exc:
        print(f"inspect_lfads_run.py: error: {exc}", file=sys.stderr)
        return 2
    print(model)
    print(model.summary())

    readouts = model.factors_to_logrates_W
    fig, axes = plt.subplots(1, 1 + len(readouts), figsize=(4.2 * (1 + len(readouts)), 3.8), squeeze=False)
    heatmap(axes[0, 0], np.asarray(model.gen_gengru_rh_to_c_W), "generator recurrent gen_gengru_rh_to_c_W")
    for ax, (name, weights) in zip(axes[0, 1:], readouts.items()):
        heatmap(ax, np.asarray(weights), f"readout {name}")
        ax.set_xlabel("neuron")
        ax.set_ylabel("factor")
    fig.suptitle(f"run {run.name} ({run.params_string})")
    fig.tight_layout()
    if args.no_show:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.png, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        print(f"wrote {args.png}")
    else:
        plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
