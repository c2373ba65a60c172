"""Filter the test spikes online, one 20 ms sample at a time, with a model saved by train_model.py.

This is a separate process from the training, as in Bonsai's LoadModelParameters workflow:
it loads the saved parameters (native file, or a Bonsai folder with --bonsai), feeds
DATA_DIR/test.npz to lds.OnlineKalmanFilter sample by sample, orthogonalizes the latents
and shows them live with +-1 SD bands. --no-show draws the whole stream into a PNG instead.
A native file from train_model.py records the unit ids the model reads; the same units
of the test recording are filtered.

    python online_filtering.py                      # live matplotlib window
    python online_filtering.py --no-show            # writes models/online_latents.png
    python online_filtering.py --bonsai models/bonsai --speed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import lds
from lds.errors import LfadsToolsError, ShapeError, require
from lds.fileio import atomic_path

HERE = Path(__file__).resolve().parent


def load_model(args) -> tuple[lds.KalmanParams, list | None]:
    """The saved parameters and the unit ids they read (None when the file records none, as a Bonsai folder)."""
    if args.bonsai is not None:
        return lds.KalmanParams.load_bonsai(args.bonsai), None
    params = lds.KalmanParams.load(args.model)
    return params, (lds.native.read_info(args.model).metadata.get("user") or {}).get("unit_ids")


def draw(axes, times, means, sds, start: int = 0) -> None:
    """One panel per latent: the mean and a +-1 SD band, from sample ``start`` on."""
    for k, ax in enumerate(axes):
        ax.clear()
        t, m, s = times[start:], means[start:, k], sds[start:, k]
        ax.fill_between(t, m - s, m + s, color=f"C{k}", alpha=0.25, linewidth=0)
        ax.plot(t, m, color=f"C{k}", linewidth=1)
        ax.set_ylabel(f"latent {k}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time (s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data",
                        help="folder of test.npz (default: data/ beside this script; a folder you give is "
                             "relative to the current folder)")
    parser.add_argument("--model", type=Path, default=HERE / "models" / "neural_latents.h5",
                        help="native parameter file (default: models/neural_latents.h5 beside this script)")
    parser.add_argument("--bonsai", type=Path, default=None, help="load a Bonsai parameter folder instead")
    parser.add_argument("--latents", type=int, default=4, help="latents to show, largest first (default 4)")
    parser.add_argument("--steps", type=int, default=None, help="filter only the first STEPS samples")
    parser.add_argument("--window", type=float, default=10.0, help="live view: seconds shown (default 10)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="live view: 1 = real time, 2 = twice as fast, 0 = as fast as possible")
    parser.add_argument("--no-show", action="store_true", help="no window; write a PNG of the whole stream")
    parser.add_argument("--png", type=Path, default=HERE / "models" / "online_latents.png",
                        help="PNG to write (default: models/online_latents.png beside this script)")
    args = parser.parse_args(argv)
    if min(args.latents, 1 if args.steps is None else args.steps) < 1 or args.window <= 0 or args.speed < 0:
        parser.error("--latents and --steps must be positive, --window > 0 and --speed >= 0")

    try:
        matplotlib = require("matplotlib", "plot")
        if args.no_show:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        params, unit_ids = load_model(args)
        test = lds.data.load_binned(args.data_dir / "test.npz")
        if unit_ids is not None:
            test = test.select_units(unit_ids)
        if test.num_units != params.num_observations:
            hint = "; a Bonsai folder does not record which ones: use the native file (--model)" if args.bonsai else ""
            raise ShapeError(f"the model reads {params.num_observations} units but {test.source} has "
                             f"{test.num_units}; train and filter on recordings of the same units{hint}")
    except LfadsToolsError as exc:
        print(f"online_filtering.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"model: K = {params.num_states} states, N = {params.num_observations} units; test data: {test}")

    stream = test.observations[: args.steps]
    shown = max(1, min(args.latents, params.num_states))
    times = np.arange(1, len(stream) + 1) * test.bin_width
    means, sds = np.zeros((len(stream), shown)), np.zeros((len(stream), shown))
    live = not args.no_show and plt.get_backend().lower() != "agg"
    fig, axes = plt.subplots(shown, 1, sharex=True, figsize=(9, 1.6 * shown + 0.8), squeeze=False)
    axes = axes[:, 0]
    fig.suptitle("orthogonalized latents, online Kalman filter (mean ± 1 SD)")
    if live:
        plt.show(block=False)
    online = lds.OnlineKalmanFilter(params, orthogonalize=True)
    started = time.perf_counter()
    refresh = max(1, int(0.1 / test.bin_width))  # redraw every 100 ms of data
    for t, sample in enumerate(stream):
        mean, cov = online.step(sample)
        means[t] = mean[:shown].cpu().numpy()
        sds[t] = np.sqrt(np.clip(np.diag(cov.cpu().numpy())[:shown], 0, None))
        if live and (t % refresh == 0 or t == len(stream) - 1):
            window = int(args.window / test.bin_width)
            draw(axes, times[: t + 1], means[: t + 1], sds[: t + 1], start=max(0, t + 1 - window))
            plt.pause(0.001)
            if args.speed > 0:  # keep to the recording's pace
                time.sleep(max(0.0, times[t] / args.speed - (time.perf_counter() - started)))
            if not plt.fignum_exists(fig.number):
                break
    times, means, sds = times[: online.num_steps], means[: online.num_steps], sds[: online.num_steps]  # closed early?
    print(f"filtered {online.num_steps} samples; log-likelihood {float(online.log_likelihood):.6g}")
    print("latent  mean      sd(mean)  mean sd")
    for k in range(shown):
        print(f"{k:6d}  {means[:, k].mean():+.4f}  {means[:, k].std():.4f}    {sds[:, k].mean():.4f}")
    if live:
        plt.show()
        return 0
    draw(axes, times, means, sds)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.png, overwrite=True) as tmp:  # a plot is replaced, but never half-written
        fig.savefig(tmp, dpi=100, format="png")
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
