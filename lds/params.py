"""``KalmanParams``: the parameters of a linear dynamical system.

Model (prior one step before the first observation, as in Bonsai.ML.Lds.Torch)::

    x_{-1} ~ N(m0, V0)
    x_t    = A x_{t-1} + b + w_t,   w_t ~ N(0, Q)
    y_t    = C x_t     + d + v_t,   v_t ~ N(0, R)

For several recording sessions the dynamics are shared and the observation model
(C, d, R) is a :class:`~lds.containers.DatasetList` with one entry per session.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .containers import DatasetList, FieldSpec, ParamsContainer, dataset_name_list
from .errors import DatasetNameError, NotPositiveDefiniteError, ShapeError, ValidationError

__all__ = ["KalmanParams"]

_OBSERVATION_FIELDS = ("measurement_function", "observation_offset", "measurement_noise_covariance")
_ALIASES = {
    "A": "transition_matrix",
    "b": "state_offset",
    "Q": "process_noise_covariance",
    "C": "measurement_function",
    "d": "observation_offset",
    "R": "measurement_noise_covariance",
    "m0": "initial_mean",
    "V0": "initial_covariance",
}
_FIELD_NAMES = frozenset(_ALIASES.values())


def _alias(long_name: str, symbol: str):
    def get(self):
        return getattr(self, long_name)

    def set_(self, value):
        self.set_field(long_name, value)

    return property(get, set_, doc=f"Alias of ``{long_name}`` ({symbol}).")


class KalmanParams(ParamsContainer):
    """Parameters of a linear dynamical system (Kalman filter), float64 by default.

    Keywords are the long field names plus ``num_states``, ``num_observations``
    (an int, or one int per session), ``dataset_names`` (several sessions),
    ``dtype`` and ``device``. Missing fields get the defaults of Bonsai.ML.Lds.Torch:
    ``A = I``, ``C = eye(N, K)``, ``Q = I``, ``R = I``, ``m0 = 0``, ``V0 = I``; a
    one-element noise value ``s`` means ``s * I``. The offsets ``b`` and ``d`` are
    optional and either may be given alone (a missing one counts as zero).
    ``dtype`` (a torch dtype or its name, e.g. ``"float32"``) defaults to float64 and
    ``device`` to that of the first tensor given (else the CPU). Every tensor is copied.
    """

    FIELDS = (
        FieldSpec("transition_matrix", "Dynamics", "A: state transition matrix", ("K", "K")),
        FieldSpec("state_offset", "Dynamics", "b: constant added to the state each step", ("K",), optional=True),
        FieldSpec("process_noise_covariance", "Dynamics", "Q: process noise covariance", ("K", "K")),
        FieldSpec("measurement_function", "Observation", "C: maps states to observations", ("N", "K"), per_dataset=True),
        FieldSpec("observation_offset", "Observation", "d: constant added to the observations", ("N",),
                  per_dataset=True, optional=True),
        FieldSpec("measurement_noise_covariance", "Observation", "R: measurement noise covariance", ("N", "N"),
                  per_dataset=True),
        FieldSpec("initial_mean", "Initial state", "m0: prior mean of the state one step before the data", ("K",)),
        FieldSpec("initial_covariance", "Initial state", "V0: prior covariance of that state", ("K", "K")),
    )

    SIZE_KEYWORDS = {"K": "num_states", "N": "num_observations"}

    A = _alias("transition_matrix", "A")
    b = _alias("state_offset", "b")
    Q = _alias("process_noise_covariance", "Q")
    C = _alias("measurement_function", "C")
    d = _alias("observation_offset", "d")
    R = _alias("measurement_noise_covariance", "R")
    m0 = _alias("initial_mean", "m0")
    V0 = _alias("initial_covariance", "V0")
    _constructed = False  # set at the end of __init__

    def __init__(
        self,
        *,
        transition_matrix=None,
        measurement_function=None,
        process_noise_covariance=None,
        measurement_noise_covariance=None,
        initial_mean=None,
        initial_covariance=None,
        state_offset=None,
        observation_offset=None,
        num_states: int | None = None,
        num_observations: int | Sequence[int] | Mapping[str, int] | None = None,
        dataset_names: str | Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
        device=None,
        validate: bool = True,
    ):
        given = dict(
            transition_matrix=transition_matrix, measurement_function=measurement_function,
            process_noise_covariance=process_noise_covariance,
            measurement_noise_covariance=measurement_noise_covariance, initial_mean=initial_mean,
            initial_covariance=initial_covariance, state_offset=state_offset,
            observation_offset=observation_offset,
        )
        self._dtype, self._device = _resolve_dtype_device(given, dtype, device)
        names = _resolve_dataset_names(given, num_observations, dataset_names)
        self._dataset_names = names
        convert = self._tensor
        per_session = {k: _split_sessions(k, given[k], names) for k in _OBSERVATION_FIELDS}
        if isinstance(num_observations, Mapping) and names is not None:
            num_observations = [num_observations[n] for n in names]

        K = _first_size(
            [("transition_matrix", given["transition_matrix"], 0),
             ("measurement_function", _first(per_session["measurement_function"]), 1),
             ("initial_mean", given["initial_mean"], 0), ("initial_covariance", given["initial_covariance"], 0),
             ("process_noise_covariance", given["process_noise_covariance"], 0),
             ("state_offset", given["state_offset"], 0)],
            num_states, "num_states",
        )
        if K is None:
            raise ValidationError(
                "KalmanParams needs num_states or a tensor that fixes it "
                "(transition_matrix, measurement_function, initial_mean, ...)"
            )
        Ns = []
        for i in range(1 if names is None else len(names)):
            fixed = num_observations[i] if isinstance(num_observations, (list, tuple)) else num_observations
            N = _first_size(
                [("measurement_function", _nth(per_session["measurement_function"], i), 0),
                 ("measurement_noise_covariance", _nth(per_session["measurement_noise_covariance"], i), 0),
                 ("observation_offset", _nth(per_session["observation_offset"], i), 0)],
                fixed, "num_observations",
            )
            if N is None:
                raise ValidationError(
                    "KalmanParams needs num_observations or a tensor that fixes it "
                    "(measurement_function, measurement_noise_covariance, observation_offset)"
                )
            Ns.append(N)
        self._num_states = K
        self._num_observations = Ns

        eye = self._eye
        self.transition_matrix = eye(K) if transition_matrix is None else convert(transition_matrix)
        self.state_offset = None if state_offset is None else convert(state_offset)
        self.process_noise_covariance = _noise(process_noise_covariance, K, convert, eye)
        self.initial_mean = (
            torch.zeros(K, dtype=self._dtype, device=self._device) if initial_mean is None else convert(initial_mean)
        )
        self.initial_covariance = eye(K) if initial_covariance is None else convert(initial_covariance)

        C_list, d_list, R_list = [], [], []
        for i, N in enumerate(Ns):
            C = _nth(per_session["measurement_function"], i)
            d = _nth(per_session["observation_offset"], i)
            R = _nth(per_session["measurement_noise_covariance"], i)
            C_list.append(torch.eye(N, K, dtype=self._dtype, device=self._device) if C is None else convert(C))
            d_list.append(None if d is None else convert(d))
            R_list.append(_noise(R, N, convert, eye))
        if names is None:
            self.measurement_function, self.observation_offset, self.measurement_noise_covariance = (
                C_list[0], d_list[0], R_list[0])
        else:
            self.measurement_function = self._sessions_field("measurement_function", C_list)
            self.observation_offset = self._sessions_field("observation_offset", d_list)
            self.measurement_noise_covariance = self._sessions_field("measurement_noise_covariance", R_list)
        self._constructed = True  # from now on, assigning a field goes through set_field
        if validate:
            self.validate()

    def __setattr__(self, name, value):
        if self._constructed and name in _FIELD_NAMES:
            self.set_field(name, value)
        else:
            object.__setattr__(self, name, value)

    # ---- construction helpers ---------------------------------------------------
    def _tensor(self, value) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.detach().to(dtype=self._dtype, device=self._device).clone()
        return torch.as_tensor(np.asarray(value), dtype=self._dtype, device=self._device).clone()

    def _eye(self, n: int) -> torch.Tensor:
        return torch.eye(n, dtype=self._dtype, device=self._device)

    def set_field(self, name: str, value) -> None:
        """Replace one field (by long name or alias), converted and shape-checked.

        As in the constructor, a one-element noise value ``s`` means ``s * I``. On an
        error the field keeps its old value.
        """
        name = _ALIASES.get(name, name)
        spec = self.field_spec(name)
        if value is None and not spec.optional:
            raise ValidationError(f"KalmanParams.{name} is required; only the offsets may be None")
        if self.is_multi_session and spec.per_dataset:
            sessions = _split_sessions(name, value, self._dataset_names)
            value = self._sessions_field(name, [self._field_value(name, v, i) for i, v in enumerate(sessions)])
        else:
            value = self._field_value(name, value, 0)
        old = getattr(self, name)
        object.__setattr__(self, name, value)
        try:
            self.check_shapes()
        except ShapeError:
            object.__setattr__(self, name, old)
            raise

    def _sessions_field(self, name: str, tensors: list) -> DatasetList:
        """A per-session field from one tensor (or None) per session.

        All None means absent (the offset) and a partial offset is zero-filled; a
        required field needs every session's array.
        """
        if name == "observation_offset":
            if all(t is None for t in tensors):
                return DatasetList()
            tensors = [torch.zeros(N, dtype=self._dtype, device=self._device) if t is None else t
                       for t, N in zip(tensors, self._num_observations)]
        missing = [n for n, t in zip(self._dataset_names, tensors) if t is None]
        if missing:
            raise ValidationError(f"KalmanParams.{name} is required; it has no array for sessions {missing}")
        return DatasetList(tensors, self._dataset_names)

    def _field_value(self, name: str, value, session: int):
        """``value`` as a tensor for field ``name`` (of session ``session``), None kept."""
        if value is None:
            return None
        if name.endswith("noise_covariance"):
            size = self._num_states if name == "process_noise_covariance" else self._num_observations[session]
            return _noise(value, size, self._tensor, self._eye)
        return self._tensor(value)

    # ---- structure --------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return self._num_states

    @property
    def num_observations(self):
        """N for one session, or a list with one N per session."""
        return self._num_observations[0] if self._dataset_names is None else list(self._num_observations)

    @property
    def dataset_names(self) -> list[str] | None:
        return None if self._dataset_names is None else list(self._dataset_names)

    @property
    def num_datasets(self) -> int:
        return 1 if self._dataset_names is None else len(self._dataset_names)

    @property
    def is_multi_session(self) -> bool:
        return self._dataset_names is not None

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def offsets_provided(self) -> bool:
        d = self.observation_offset
        return self.state_offset is not None or (len(d) > 0 if isinstance(d, DatasetList) else d is not None)

    @property
    def dims(self) -> dict:
        return {"K": self._num_states, "N": self.num_observations}

    def observation_models(self) -> list[tuple[str | None, torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """``[(name, C, d, R), ...]``, one per session (name None for a single session)."""
        if not self.is_multi_session:
            return [(None, self.measurement_function, self.observation_offset, self.measurement_noise_covariance)]
        d = self.observation_offset
        return [
            (name, self.measurement_function[i], d[i] if len(d) else None, self.measurement_noise_covariance[i])
            for i, name in enumerate(self._dataset_names)
        ]

    def session(self, key) -> "KalmanParams":
        """Single-session parameters for one session (by name or 0-based index)."""
        if not self.is_multi_session:
            if key in (0, -1, None):
                return self.clone()
            raise DatasetNameError(f"these parameters have a single session; got session {key!r}")
        i = self.measurement_function.index_of(key)
        _, C, d, R = self.observation_models()[i]
        return KalmanParams(
            transition_matrix=self.transition_matrix, state_offset=self.state_offset,
            process_noise_covariance=self.process_noise_covariance, measurement_function=C,
            observation_offset=d, measurement_noise_covariance=R, initial_mean=self.initial_mean,
            initial_covariance=self.initial_covariance, dtype=self._dtype, device=self._device,
        )

    # ---- validation -------------------------------------------------------------
    def validate(self) -> None:
        """Check shapes, finiteness and that the covariances are symmetric positive definite."""
        self.check_shapes()
        for name, value in self.items():
            arrays = value.items() if isinstance(value, DatasetList) else [(None, value)]
            for ds, array in arrays:
                if array is None:
                    continue
                where = name if ds is None else f"{name}[{ds!r}]"
                if not bool(torch.isfinite(array).all()):
                    raise ValidationError(f"KalmanParams.{where} has non-finite values (NaN or inf)")
                if name.endswith("covariance"):
                    _check_spd(array, where)

    # ---- conversion -------------------------------------------------------------
    def to(self, device=None, dtype: torch.dtype | None = None) -> "KalmanParams":
        """A copy on another device and/or dtype."""
        new_device = self._device if device is None else torch.device(device)
        new_dtype = self._dtype if dtype is None else as_dtype(dtype)
        return self._rebuild(lambda t: t.to(device=new_device, dtype=new_dtype), new_dtype, new_device)

    def clone(self) -> "KalmanParams":
        return self._rebuild(lambda t: t.clone(), self._dtype, self._device)

    @classmethod
    def from_dict(cls, data) -> "KalmanParams":
        """Rebuild from :meth:`to_dict` output, keeping the dtype of the arrays."""
        first = data.get("transition_matrix")
        dtype = first.dtype if torch.is_tensor(first) and first.is_floating_point() else None
        if isinstance(first, np.ndarray) and first.dtype == np.float32:
            dtype = torch.float32
        names = data.get("dataset_names")
        kwargs = {k: (DatasetList(v) if isinstance(v, Mapping) and names is None else v) for k, v in data.items()}
        return cls(**kwargs, dtype=dtype)

    def save_bonsai(self, folder, suffix: str | None = None, overwrite: bool = False, session=None):
        """Write a Bonsai.ML.Lds.Torch parameter folder (see :func:`lds.bonsai.save_bonsai`)."""
        from .bonsai import save_bonsai

        return save_bonsai(self, folder, suffix=suffix, overwrite=overwrite, session=session)

    @classmethod
    def load_bonsai(cls, folder, dtype: torch.dtype | None = None, device=None) -> "KalmanParams":
        """Read a Bonsai.ML.Lds.Torch parameter folder (see :func:`lds.bonsai.load_bonsai`)."""
        from .bonsai import load_bonsai

        return load_bonsai(folder, dtype=dtype, device=device)

    def _rebuild(self, fn, dtype, device) -> "KalmanParams":
        return KalmanParams(**self._mapped_dict(fn), dtype=dtype, device=device, validate=False)

    def format(self, verbose: bool = False) -> str:
        text = super().format(verbose)
        head, _, rest = text.partition("\n")
        N = self.num_observations
        sessions = "" if not self.is_multi_session else f", {self.num_datasets} sessions"
        info = f"   (K = {self.num_states} states, N = {N} observations{sessions}, {str(self._dtype).replace('torch.', '')}, {self._device})"
        return f"{head}\n{info}\n{rest}"


def as_dtype(dtype) -> torch.dtype | None:
    """A torch dtype from ``torch.float32``, ``"float32"`` or ``"torch.float32"`` (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else None
    if not isinstance(found, torch.dtype):
        raise ValidationError(f"unknown dtype {dtype!r}; use e.g. 'float32' or torch.float64")
    return found


def _resolve_dtype_device(given: dict, dtype, device):
    dtype = torch.float64 if dtype is None else as_dtype(dtype)
    if not dtype.is_floating_point:
        raise ValidationError(f"KalmanParams needs a floating dtype, got {dtype}")
    if device is None:
        first = next((v for v in _flat_values(given) if isinstance(v, torch.Tensor)), None)
        device = first.device if first is not None else torch.device("cpu")
    return dtype, torch.device(device)


def _flat_values(given: dict):
    for value in given.values():
        if isinstance(value, DatasetList):
            yield from value
        elif isinstance(value, Mapping):
            yield from value.values()
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], (torch.Tensor, np.ndarray)):
            yield from value
        else:
            yield value


def _resolve_dataset_names(given, num_observations, dataset_names):
    if dataset_names is not None:
        names = dataset_name_list(dataset_names)
        if len(set(names)) != len(names) or not names:
            raise ValidationError(f"dataset_names must be unique and non-empty, got {names}")
        return names
    for key in _OBSERVATION_FIELDS:
        value = given[key]
        if isinstance(value, DatasetList) and len(value):
            return value.names
        if isinstance(value, Mapping):
            return [str(k) for k in value]
    if isinstance(num_observations, Mapping):
        return [str(k) for k in num_observations]
    if isinstance(num_observations, (list, tuple)):
        return [f"session_{i}" for i in range(len(num_observations))]
    for key in _OBSERVATION_FIELDS:
        value = given[key]
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (torch.Tensor, np.ndarray)):
            return [f"session_{i}" for i in range(len(value))]
    return None


def _split_sessions(name, value, names):
    """Per-session list (aligned with ``names``; one entry for a single session) for an observation field."""
    if names is None:
        if isinstance(value, (DatasetList, Mapping)):
            raise ValidationError(f"{name} is per-session but no dataset_names were given")
        return [value]
    if value is None or (isinstance(value, (DatasetList, Mapping)) and len(value) == 0):
        return [None] * len(names)  # absent (an empty DatasetList, or {} from to_dict)
    if isinstance(value, (DatasetList, Mapping)):
        keys = value.names if isinstance(value, DatasetList) else list(value)
        missing = [n for n in names if n not in keys]
        if missing:
            raise DatasetNameError(f"{name} has no entry for sessions {missing}; it has {list(keys)}")
        return [value[n] for n in names]
    if isinstance(value, (list, tuple)) and len(value) == len(names) and isinstance(value[0], (torch.Tensor, np.ndarray)):
        return list(value)
    raise ValidationError(
        f"{name} must give one array per session ({len(names)} sessions: {names}), "
        f"as a DatasetList, a dict or a list"
    )


def _first(values):
    return values[0] if isinstance(values, list) else values


def _nth(values, i):
    return values[i] if isinstance(values, list) else values


def _first_size(candidates, fixed, what):
    """The dimension from ``fixed`` or from the first ``(field, value, axis)`` given (checked later)."""
    if fixed is not None:
        if int(fixed) < 1:
            raise ValidationError(f"{what} must be a positive integer, got {fixed}")
        return int(fixed)
    for field, value, axis in candidates:
        if value is None:
            continue
        shape = tuple(np.shape(value)) if not torch.is_tensor(value) else tuple(value.shape)
        if field.endswith("noise_covariance") and int(np.prod(shape)) == 1:
            continue  # one-element noise value: does not fix the size
        if len(shape) > axis:
            if shape[axis] < 1:
                raise ShapeError(f"KalmanParams.{field} is empty (shape {shape}); {what} must be at least 1")
            return int(shape[axis])
    return None


def _noise(value, n, convert, eye):
    if value is None:
        return eye(n)
    tensor = convert(value)
    if tensor.numel() == 1:
        return tensor.reshape(()) * eye(n)
    return tensor


def _check_spd(matrix: torch.Tensor, where: str) -> None:
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ShapeError(f"KalmanParams.{where} must be a square matrix, got shape {tuple(matrix.shape)}")
    scale = float(matrix.abs().max()) if matrix.numel() else 0.0
    tol = float(torch.finfo(matrix.dtype).eps) ** 0.5 * max(scale, 1e-300)
    if float((matrix - matrix.T).abs().max()) > tol:
        raise NotPositiveDefiniteError(f"KalmanParams.{where} is not symmetric")
    _, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:
        raise NotPositiveDefiniteError(f"KalmanParams.{where} is not positive definite")
