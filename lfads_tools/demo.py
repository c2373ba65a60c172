"""``lfads-tools demo``: the main workflow on embedded synthetic data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import lds


def _section(title: str) -> None:
    print(f"\n=== {title} ===")


def run_demo(out=None, seed: int = 0) -> Path:
    """Generate data, run every capability end to end, print what a new user should see."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="lfads-tools-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"lfads-tools demo (seed {seed}); files go to {out}")

    _section("Synthetic multi-session Lorenz spiking data")
    spikes = lds.lorenz_spikes(seed=seed)
    print(spikes)
    for name, counts in zip(spikes.session_names, spikes.counts):
        rate = counts.mean() / spikes.bin_width
        print(f"  {name}: mean rate {rate:.2f} spikes/s, {int(counts.sum())} spikes")

    _section("A random stable LDS (K=4 states, N=12 channels) and samples from it")
    params = lds.random_stable_lds(4, 12, seed=seed)
    sample = lds.sample_lds(params, 200, seed=seed)
    print(params)
    print(params.summary())
    print(f"\nsampled states {tuple(sample.states.shape)}, observations {tuple(sample.observations.shape)}, "
          f"observation std {float(np.std(sample.observations.numpy())):.3f}")
    return out
