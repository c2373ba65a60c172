"""Fit a 10-state linear dynamical system to the binned training spikes by EM and save it.

Reads DATA_DIR/train.npz (from download_data.py), runs EM with a progress bar, prints the
parameters, and writes MODEL (native parameter file, with the EM log-likelihoods and the
unit ids it reads as metadata) and, with --bonsai, a Bonsai.ML.Lds.Torch parameter folder
for LoadKalmanFilterParameters. Units that never fire in the training data are left out
(an LDS cannot model a constant channel); online_filtering.py reads the same units.

    python train_model.py
    python train_model.py --bonsai models/bonsai --overwrite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lds
from lds.bonsai import check_bonsai_writable
from lds.errors import LfadsToolsError
from lds.fileio import check_writable

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data",
                        help="folder of train.npz (default: data/ beside this script; a folder you give is "
                             "relative to the current folder)")
    parser.add_argument("--model", type=Path, default=HERE / "models" / "neural_latents.h5",
                        help="native parameter file to write (default: models/neural_latents.h5 beside this script)")
    parser.add_argument("--bonsai", type=Path, default=None, help="also write a Bonsai parameter folder here")
    parser.add_argument("--states", type=int, default=10, help="latent states (default 10)")
    parser.add_argument("--max-iter", type=int, default=50, help="EM iterations at most (default 50)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="relative log-likelihood change to stop at (default 1e-4)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model saved before")
    args = parser.parse_args(argv)

    try:
        # the outputs are checked before the fit, not after
        check_writable(args.model, args.overwrite, label=f"--model {args.model}", option="--overwrite")
        if args.bonsai is not None:
            check_bonsai_writable(args.bonsai, args.overwrite, label=f"--bonsai {args.bonsai}", option="--overwrite")
        train = lds.data.load_binned(args.data_dir / "train.npz")
        print(f"training data: {train}")
        observations, kept = lds.data.drop_constant_channels(train.observations)
        unit_ids = train.unit_ids[kept].tolist()
        if len(unit_ids) < train.num_units:
            silent = sorted(set(train.unit_ids.tolist()) - set(unit_ids))
            print(f"note: leaving out {len(silent)} units that never fire in the training data (unit ids {silent}); "
                  f"the model reads the other {len(unit_ids)}")
        result = lds.fit_em(observations, num_states=args.states, max_iter=args.max_iter, tol=args.tol)
        lls = result.log_likelihoods.tolist()
        print(result.params)
        print(result.params.summary())
        print(f"\nEM stopped ({result.termination}) after {result.num_iterations} iterations; "
              f"log-likelihood {lls[0]:.6g} -> {lls[-1]:.6g}")
        args.model.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"data": train.source, "bin_width": train.bin_width, "transform": train.transform,
                    "unit_ids": unit_ids, "log_likelihoods": lls, "termination": result.termination}
        print(f"saved {result.params.save(args.model, metadata=metadata, overwrite=args.overwrite)}")
        if args.bonsai is not None:
            print(f"saved Bonsai parameter folder {result.params.save_bonsai(args.bonsai, overwrite=args.overwrite)}")
    except (LfadsToolsError, OSError) as exc:  # bad data or paths, a full disk
        print(f"train_model.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
