"""Fit a 10-state linear dynamical system to the binned training spikes by EM and save it.

Reads DATA_DIR/train.npz (from download_data.py), runs EM with a progress bar, prints the
parameters, and writes MODEL (native parameter file, with the EM log-likelihoods as
metadata) and, with --bonsai, a Bonsai.ML.Lds.Torch parameter folder for
LoadKalmanFilterParameters.

    python train_model.py
    python train_model.py --bonsai models/bonsai --overwrite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lds
from lds.errors import LfadsToolsError

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="folder of train.npz (default ./data)")
    parser.add_argument("--model", type=Path, default=HERE / "models" / "neural_latents.h5",
                        help="native parameter file to write (default ./models/neural_latents.h5)")
    parser.add_argument("--bonsai", type=Path, default=None, help="also write a Bonsai parameter folder here")
    parser.add_argument("--states", type=int, default=10, help="latent states (default 10)")
    parser.add_argument("--max-iter", type=int, default=50, help="EM iterations at most (default 50)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="relative log-likelihood change to stop at (default 1e-4)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model saved before")
    args = parser.parse_args(argv)

    try:
        train = lds.data.load_binned(args.data_dir / "train.npz")
        print(f"training data: {train}")
        result = lds.fit_em(train.observations, num_states=args.states, max_iter=args.max_iter, tol=args.tol)
        lls = result.log_likelihoods.tolist()
        print(result.params)
        print(result.params.summary())
        print(f"\nEM stopped ({result.termination}) after {result.num_iterations} iterations; "
              f"log-likelihood {lls[0]:.6g} -> {lls[-1]:.6g}")
        args.model.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"data": train.source, "bin_width": train.bin_width, "transform": train.transform,
                    "log_likelihoods": lls, "termination": result.termination}
        print(f"saved {result.params.save(args.model, metadata=metadata, overwrite=args.overwrite)}")
        if args.bonsai is not None:
            print(f"saved Bonsai parameter folder {result.params.save_bonsai(args.bonsai, overwrite=args.overwrite)}")
    except LfadsToolsError as exc:
        print(f"train_model.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
