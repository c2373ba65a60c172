"""Seeded synthetic data for the demo, the tests and the examples.

- :func:`lorenz_spikes`: Poisson spike counts driven by a Lorenz attractor, for several
  sessions that record different numbers of neurons, trial-structured, as in the
  LFADS multi-session (stitching) demos.
- :func:`random_stable_lds` and :func:`sample_lds`: a random stable linear dynamical
  system and samples from it with Gaussian or Poisson observations.

Everything is reproducible from ``seed`` (NumPy ``default_rng``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ValidationError
from .params import KalmanParams

__all__ = ["LorenzSpikes", "lorenz_trajectories", "lorenz_spikes", "random_stable_lds", "reference_start", "sample_lds",
           "LdsSample"]


def lorenz_trajectories(
    num_conditions: int,
    num_steps: int,
    *,
    dt: float = 0.006,
    burn_in: int = 300,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    seed: int = 0,
) -> np.ndarray:
    """Lorenz trajectories ``[num_conditions, num_steps, 3]``, z-scored over all samples.

    Each condition starts from a random point, runs ``burn_in`` steps to reach the
    attractor, then ``num_steps`` steps (fourth-order Runge-Kutta with step ``dt``).
    """
    rng = np.random.default_rng(seed)

    def deriv(s):
        x, y, z = s[:, 0], s[:, 1], s[:, 2]
        return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=1)

    state = rng.uniform(-15.0, 15.0, size=(num_conditions, 3)) + np.array([0.0, 0.0, 25.0])
    out = np.empty((num_conditions, num_steps, 3))
    for step in range(burn_in + num_steps):
        k1 = deriv(state)
        k2 = deriv(state + 0.5 * dt * k1)
        k3 = deriv(state + 0.5 * dt * k2)
        k4 = deriv(state + dt * k3)
        state = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if step >= burn_in:
            out[:, step - burn_in] = state
    flat = out.reshape(-1, 3)
    return (out - flat.mean(0)) / flat.std(0)


@dataclass
class LorenzSpikes:
    """Multi-session Lorenz spiking data.

    ``counts[i]`` is ``[trials, time bins, neurons]`` (int64) for session
    ``session_names[i]``; ``rates[i]`` the true rates in spikes/s; ``latents`` the
    Lorenz state per condition ``[conditions, time bins, 3]``; ``conditions[i]`` the
    condition of each trial of session ``i``.
    """

    counts: list[np.ndarray]
    rates: list[np.ndarray]
    latents: np.ndarray
    conditions: list[np.ndarray]
    session_names: list[str]
    bin_width: float
    readouts: list[np.ndarray] = field(repr=False, default_factory=list)

    @property
    def num_sessions(self) -> int:
        return len(self.counts)

    def spike_times(self, session=0, trials=None, seed: int = 0) -> list[np.ndarray]:
        """Spike times (seconds) of each neuron of one session, its trials back to back as one recording.

        ``session``: index or name; ``trials``: index, slice or indices of the trials to
        use (default all). Trial ``k`` of those spans ``[k, k + 1) * bins * bin_width``;
        each spike lies at a random point of the middle 90 % of its bin, so binning the
        times with ``bin_width`` (edges from 0) gives the counts back.
        """
        if session not in range(self.num_sessions) and session not in self.session_names:
            raise ValidationError(f"no session {session!r}; the sessions are {self.session_names}")
        index = self.session_names.index(session) if isinstance(session, str) else session
        counts = self.counts[index] if trials is None else self.counts[index][trials]
        stream = counts.reshape(-1, counts.shape[-1])  # [trials * bins, neurons]
        rng = np.random.default_rng(seed)
        times = []
        for unit in range(stream.shape[1]):
            bins = np.repeat(np.arange(len(stream)), stream[:, unit])
            times.append(np.sort((bins + rng.uniform(0.05, 0.95, size=bins.size)) * self.bin_width))
        return times

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {c.shape[0]} trials x {c.shape[1]} bins x {c.shape[2]} neurons"
                          for n, c in zip(self.session_names, self.counts))
        return f"LorenzSpikes({parts}; bin {self.bin_width * 1000:g} ms)"


def lorenz_spikes(
    neurons_per_session=(30, 35, 40),
    *,
    trials_per_session: int = 40,
    num_conditions: int = 8,
    num_steps: int = 50,
    bin_width: float = 0.01,
    base_rate: float = 5.0,
    gain: float = 1.0,
    seed: int = 0,
) -> LorenzSpikes:
    """Poisson spike counts for several sessions driven by one Lorenz system.

    Every session sees the same set of ``num_conditions`` Lorenz trajectories (trial
    conditions) through its own random readout: ``log rate = log(base_rate) + gain *
    W z`` with ``W`` of shape ``[neurons, 3]`` drawn with unit-norm rows. Trials are
    assigned to conditions at random. Counts are ``Poisson(rate * bin_width)``.
    """
    neurons = [int(n) for n in neurons_per_session]
    if not neurons or min(neurons) < 1:
        raise ValidationError(f"neurons_per_session must be positive integers, got {neurons_per_session}")
    if min(trials_per_session, num_conditions, num_steps) < 1 or bin_width <= 0:
        raise ValidationError("trials_per_session, num_conditions, num_steps and bin_width must be positive")
    rng = np.random.default_rng(seed)
    latents = lorenz_trajectories(num_conditions, num_steps, seed=int(rng.integers(2**31)))
    counts, rates, conditions, readouts = [], [], [], []
    for n in neurons:
        W = rng.normal(size=(n, 3))
        W /= np.linalg.norm(W, axis=1, keepdims=True)
        cond = rng.integers(num_conditions, size=trials_per_session)
        log_rate = np.log(base_rate) + gain * latents[cond] @ W.T
        rate = np.exp(log_rate)
        counts.append(rng.poisson(rate * bin_width).astype(np.int64))
        rates.append(rate)
        conditions.append(cond)
        readouts.append(W)
    names = [f"session_{i}" for i in range(len(neurons))]
    return LorenzSpikes(counts, rates, latents, conditions, names, bin_width, readouts)


def random_stable_lds(
    num_states: int,
    num_observations,
    *,
    spectral_radius: float = 0.95,
    process_noise: float = 0.1,
    measurement_noise: float = 0.5,
    offsets: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> KalmanParams:
    """A random LDS whose transition matrix has the given spectral radius.

    ``num_observations`` may be a list for a multi-session system (one observation
    model per session). Q and R are random diagonal-dominant SPD matrices scaled by
    ``process_noise`` and ``measurement_noise``.
    """
    if not 0 < spectral_radius < 1:
        raise ValidationError(f"spectral_radius must be in (0, 1), got {spectral_radius}")
    rng = np.random.default_rng(seed)
    K = int(num_states)
    A = rng.normal(size=(K, K))
    A *= spectral_radius / max(np.abs(np.linalg.eigvals(A)))

    def spd(n, scale):
        M = rng.normal(size=(n, n)) / np.sqrt(n)
        return scale * (0.5 * M @ M.T + np.eye(n))

    sessions = list(num_observations) if isinstance(num_observations, (list, tuple)) else None
    Ns = sessions if sessions is not None else [int(num_observations)]
    Cs = [rng.normal(size=(N, K)) / np.sqrt(K) for N in Ns]
    Rs = [spd(N, measurement_noise) for N in Ns]
    ds = [rng.normal(size=N) for N in Ns] if offsets else None
    kwargs = dict(
        transition_matrix=A,
        process_noise_covariance=spd(K, process_noise),
        initial_mean=rng.normal(size=K),
        initial_covariance=np.eye(K),
        state_offset=0.1 * rng.normal(size=K) if offsets else None,
        dtype=dtype,
    )
    if sessions is None:
        return KalmanParams(**kwargs, measurement_function=Cs[0], measurement_noise_covariance=Rs[0],
                            observation_offset=None if ds is None else ds[0])
    names = [f"session_{i}" for i in range(len(Ns))]
    return KalmanParams(**kwargs, dataset_names=names, measurement_function=Cs, measurement_noise_covariance=Rs,
                        observation_offset=ds)


def reference_start(num_states: int, num_observations: int, seed: int = 0) -> KalmanParams:
    """The starting point of the Bonsai.ML.Lds.Torch / lds_python EM test: NumPy's legacy
    generator seeded with ``seed`` draws A = diag(N(0, 0.1²)), C, Q, R, m0, V0 in that order
    (C and m0 normal with sd 0.1; Q, R and V0 diagonal with the absolute values of such draws)."""
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed), without the global state
    K, N = int(num_states), int(num_observations)
    A = np.diag(rng.normal(0, 0.1, K))
    C = rng.normal(0, 0.1, (N, K))
    Q = np.diag(np.abs(rng.normal(0, 0.1, K)))
    R = np.diag(np.abs(rng.normal(0, 0.1, N)))
    m0 = rng.normal(0, 0.1, K)
    V0 = np.diag(np.abs(rng.normal(0, 0.1, K)))
    return KalmanParams(transition_matrix=A, measurement_function=C, process_noise_covariance=Q,
                        measurement_noise_covariance=R, initial_mean=m0, initial_covariance=V0)


@dataclass
class LdsSample:
    """Samples from an LDS: ``states`` ``[..., T, K]`` and ``observations`` ``[..., T, N]``."""

    states: torch.Tensor
    observations: torch.Tensor


def sample_lds(
    params: KalmanParams,
    num_steps: int,
    *,
    num_trials: int | None = None,
    observation: str = "gaussian",
    session=None,
    seed: int = 0,
) -> LdsSample:
    """Draw states and observations from ``params`` (prior one step before the data).

    ``num_trials`` adds a leading trial axis. ``observation="poisson"`` draws counts
    ``Poisson(exp(C x + d))`` instead of Gaussian observations. For multi-session
    parameters, ``session`` picks the observation model (name or index).
    """
    if observation not in ("gaussian", "poisson"):
        raise ValidationError(f"observation must be 'gaussian' or 'poisson', got {observation!r}")
    if int(num_steps) < 1:
        raise ValidationError(f"num_steps must be positive, got {num_steps}")
    p = params.session(session if session is not None else 0) if params.is_multi_session else params
    rng = np.random.default_rng(seed)
    A, Q = p.A.cpu().numpy(), p.Q.cpu().numpy()
    C, R = p.C.cpu().numpy(), p.R.cpu().numpy()
    b = np.zeros(p.num_states) if p.b is None else p.b.cpu().numpy()
    d = np.zeros(C.shape[0]) if p.d is None else p.d.cpu().numpy()
    B = 1 if num_trials is None else int(num_trials)
    T, K, N = int(num_steps), p.num_states, C.shape[0]
    x = rng.multivariate_normal(p.m0.cpu().numpy(), p.V0.cpu().numpy(), size=B)
    Lq = np.linalg.cholesky(Q)
    states = np.empty((B, T, K))
    for t in range(T):
        x = x @ A.T + b + rng.normal(size=(B, K)) @ Lq.T
        states[:, t] = x
    mean = states @ C.T + d
    if observation == "gaussian":
        obs = mean + rng.normal(size=(B, T, N)) @ np.linalg.cholesky(R).T
    else:
        obs = rng.poisson(np.exp(np.clip(mean, -20, 20))).astype(np.float64)
    if num_trials is None:
        states, obs = states[0], obs[0]
    as_t = lambda a: torch.as_tensor(a, dtype=p.dtype, device=p.device)  # noqa: E731
    return LdsSample(as_t(states), as_t(obs))
