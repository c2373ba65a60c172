"""The ``lfads-tools`` command line tool: inspect, runs, fit-lds, report, demo.

Every command exits 0 on success and, on bad input, prints one line
``lfads-tools COMMAND: error: ...`` to stderr and exits 2 (argparse's own usage errors
exit 2 as well). Warnings are one line ``lfads-tools COMMAND: warning: ...``. Output
paths are checked before any work starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from lds.bonsai import check_bonsai_writable
from lds.errors import LfadsToolsError, MissingFileError, ValidationError
from lds.fileio import check_writable

from .inspection import FORMATS


def _add(sub, name: str, summary: str, examples: str):
    return sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".",
        epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfads-tools",
        description="Find, load, inspect and reuse trained latent-dynamics models (LFADS, linear dynamical systems).",
        epilog="example: lfads-tools demo   (then lfads-tools COMMAND --help)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "inspect", "print the grouped view and summary table of a parameter file or folder",
             "  lfads-tools inspect models/neural_latents.h5\n"
             "  lfads-tools inspect runs/my_rc/param_YOs74u/single_dataset001/lfadsOutput/model_params\n"
             "  lfads-tools inspect lightning_checkpoints/last.ckpt --format json\n"
             "  lfads-tools inspect models/bonsai --format markdown")
    p.add_argument("path", type=Path, help="TF model_params file, lfads-torch .ckpt, native parameter file, "
                                           "Bonsai parameter folder or LFADS run folder")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("--verbose", action="store_true", help="one line per dataset for per-dataset fields")
    p.set_defaults(handler=_run_inspect)

    p = _add(sub, "runs", "print the runs table of a run collection on disk",
             "  lfads-tools runs ~/lfads/runs exampleRun\n"
             "  lfads-tools runs ~/lfads/runs exampleRun --spec single_dataset001 --params 0\n"
             "  lfads-tools runs ~/lfads/runs exampleRun --params param_YOs74u,param_Pnbu1L --format json")
    p.add_argument("root", type=Path, help="root folder of the run collections")
    p.add_argument("name", help="name of the run collection (a subfolder of ROOT)")
    p.add_argument("--spec", default=None,
                   help="run spec names or 0-based indices, comma-separated (default: every run spec)")
    p.add_argument("--params", default=None,
                   help="param_XXXXXX hashes or 0-based indices, comma-separated (default: every parameter set)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.set_defaults(handler=_run_runs)

    p = _add(sub, "fit-lds", "fit a linear dynamical system by EM to observations and save its parameters",
             "  lfads-tools fit-lds data/train.npz --states 10 --out models/lds10.h5\n"
             "  lfads-tools fit-lds recording.nwb --states 8 --bin-width 0.02 --trials --out lds8.h5 "
             "--bonsai lds8_bonsai\n"
             "  lfads-tools fit-lds y.npy --states 4 --max-iter 50 --out lds4.h5")
    p.add_argument("data", type=Path, help=".npy ([T, N] or [B, T, N]), .npz or .nwb observations; channels that "
                                           "never change (units that never fire) are left out, and the kept ones "
                                           "saved as metadata kept_channels")
    p.add_argument("--states", type=int, required=True, help="number of latent states K")
    p.add_argument("--out", type=Path, required=True, help="native parameter file to write")
    p.add_argument("--bonsai", type=Path, default=None, help="also write a Bonsai.ML.Lds.Torch parameter folder")
    p.add_argument("--max-iter", type=int, default=100, help="EM iterations at most (default 100)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="stop when the relative log-likelihood change, (LL_i - LL_i-1) / |LL_i-1|, "
                        "falls below TOL (default 1e-4)")
    p.add_argument("--key", default=None, help=".npz: name of the array to use")
    p.add_argument("--bin-width", type=float, default=0.02,
                   help=".nwb: bin width in seconds (default 0.02; one whose bins would need more than 2 GiB "
                        "is refused)")
    p.add_argument("--transform", choices=("sqrt", "counts"), default="sqrt",
                   help=".nwb: sqrt(count + 0.5) (default) or raw counts")
    p.add_argument("--trials", action="store_true", help="fit the trials of the file's trials table separately")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_fit_lds)

    p = _add(sub, "report", "write a standalone HTML report with tables and figures",
             "  lfads-tools report models/neural_latents.h5 --out report.html\n"
             "  lfads-tools report runs/my_rc/param_YOs74u/single_dataset001 --out run_report.html")
    p.add_argument("path", type=Path, help="anything `lfads-tools inspect` accepts")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.add_argument("--title", default=None, help="report title (default: the file name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(handler=_run_report)

    p = _add(sub, "demo", "run the whole workflow end to end on synthetic data",
             "  lfads-tools demo\n  lfads-tools demo --out /tmp/lfads-demo")
    p.add_argument("--out", type=Path, default=None,
                   help="new or empty folder for the files it writes (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=_run_demo)
    return parser


def _check_output(path: Path, flag: str, overwrite: bool) -> None:
    """Fail before any work when the file ``flag PATH`` cannot be written."""
    check_writable(path, overwrite, label=f"{flag} {path}", option="--overwrite")
    if not path.parent.is_dir():
        raise MissingFileError(f"{flag} {path}: folder {path.parent} does not exist")


def _run_inspect(args) -> int:
    from .inspection import format_params, open_path

    sys.stdout.write(format_params(open_path(args.path), args.format, verbose=args.verbose))
    return 0


def _search(text):
    """``--spec``/``--params`` value: None (all), or comma-separated names and 0-based indices."""
    if text is None:
        return None
    items = [int(t) if t.strip().lstrip("-").isdigit() else t.strip() for t in text.split(",")]
    return items[0] if len(items) == 1 else items


def _run_runs(args) -> int:
    import json

    from tabulate import tabulate

    from .run_collection import RunCollection

    collection = RunCollection.from_disk(args.root, args.name, progress=sys.stderr.isatty())
    if collection.n_runs == 0:
        raise MissingFileError(f"{collection.path} is not a run collection: it holds no param_XXXXXX/<run spec> "
                               "folders")
    specs = set(collection.find_run_specs(_search(args.spec)))
    params = set(collection.find_params(_search(args.params)))
    rows = [r for r in collection.runs_rows() if r["spec"] in specs and r["param"] in params]
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        row["path"] = os.path.relpath(row["path"], collection.path)
    body = [{k: ("✓" if v is True else "" if v is False else v) for k, v in row.items()} for row in rows]
    tablefmt = {"text": "simple", "markdown": "github", "html": "html"}[args.format]
    print(f"{collection.name}: {len(rows)} of {collection.n_runs} runs "
          f"({collection.n_run_specs} run specs x {collection.n_params} params) in {collection.path}")
    print(tabulate(body, headers="keys", tablefmt=tablefmt))
    return 0


def _run_fit_lds(args) -> int:
    import numpy as np

    import lds
    from lds.data import drop_constant_channels, load_observations

    _check_output(args.out, "--out", args.overwrite)  # fail before a long fit, not after
    if args.bonsai is not None:
        if args.bonsai.resolve() == args.out.resolve():
            raise ValidationError(f"--out and --bonsai are both {args.out}; the Bonsai folder needs its own path")
        check_bonsai_writable(args.bonsai, args.overwrite, label=f"--bonsai {args.bonsai}", option="--overwrite")
    y = load_observations(args.data, key=args.key, bin_width=args.bin_width, transform=args.transform,
                          split_trials=args.trials)
    num_channels = (y[0] if isinstance(y, list) else y).shape[-1]
    y, kept = drop_constant_channels(y)
    if len(kept) < num_channels:
        constant = np.setdiff1d(np.arange(num_channels), kept).tolist()
        print(f"note: leaving out {len(constant)} of {num_channels} channels that never change (0-based columns "
              f"{constant}): an LDS cannot model them; the model reads the other {len(kept)}")
    shape = f"{len(y)} trials" if isinstance(y, list) else "x".join(map(str, y.shape))
    print(f"fitting a {args.states}-state LDS to {args.data} ({shape}) by EM, at most {args.max_iter} iterations")
    result = lds.fit_em(y, num_states=args.states, max_iter=args.max_iter, tol=args.tol, progress=not args.quiet)
    lls = [float(v) for v in result.log_likelihoods]
    metadata = {"source": str(args.data), "num_states": args.states, "log_likelihoods": lls,
                "converged": bool(result.converged), "num_iterations": int(result.num_iterations),
                "kept_channels": kept.tolist()}
    out = result.params.save(args.out, metadata=metadata, overwrite=args.overwrite)
    print(result.params)
    print(result.params.summary())
    status = "converged" if result.converged else "stopped"
    print(f"\nEM {status} after {result.num_iterations} iterations, log-likelihood {lls[-1]:.6g}")
    print(f"saved {out}")
    if args.bonsai is not None:
        print(f"saved Bonsai parameter folder {result.params.save_bonsai(args.bonsai, overwrite=args.overwrite)}")
    return 0


def _run_report(args) -> int:
    from .inspection import open_path
    from .report import write_report

    _check_output(args.out, "--out", args.overwrite)
    opened = open_path(args.path)
    title = args.title or f"{args.path.name}: {type(opened.params).__name__}"
    out = write_report(opened.params, args.out, title=title, source=f"{opened.source}: {opened.kind}",
                       curves=opened.curves, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _run_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"lfads-tools {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # the reader went away (lfads-tools runs ... | head): stop quietly
        # as Python's docs advise (signal module, "Note on SIGPIPE"): no second error when Python flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (LfadsToolsError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"lfads-tools {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lfads-tools {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
