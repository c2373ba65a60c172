"""``RunParams``: LFADS hyperparameters with the MATLAB-compatible param and data hashes.

Every hyperparameter of lfads-run-manager's ``LFADS.RunParams`` is declared here with
its MATLAB class and class-definition default, in declaration order and display group.
``param_hash`` / ``data_hash`` hash only the values that differ from their defaults,
exactly as the MATLAB code does, so folders made by MATLAB are found from Python.

Subclasses add parameters the MATLAB way, by declaring them; they join both hashes
only when they differ from their default::

    class MyParams(RunParams):
        EXTRA_PARAMETERS = (Hyperparameter("useHandKinematics", "logical", False),)
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterable

import numpy as np

from lds.errors import UnknownParameterError, ValidationError

from .matlab_hash import NUMERIC_CLASSES, infer_matlab_class, matlab_dims, struct_hash

__all__ = ["Hyperparameter", "RunParams", "DEFAULT_VERSION"]

DEFAULT_VERSION = 20171107
_INTEGER_RANGES = {
    name: (int(np.iinfo(code).min), int(np.iinfo(code).max))
    for name, code in NUMERIC_CLASSES.items()
    if name not in ("double", "single")
}


@dataclass(frozen=True, eq=False)
class Hyperparameter:
    """One hyperparameter: name, MATLAB class (``None`` = untyped), default and display group."""

    name: str
    matlab_class: str | None
    default: Any
    group: str = ""
    hidden: bool = False
    root: bool = True  # declared by LFADS.RunParams itself (matters for the data hash)


def _table() -> tuple[Hyperparameter, ...]:
    groups = [
        ("Run Manager logistics and data processing", [
            ("name", "char", ""), ("version", "uint32", DEFAULT_VERSION), ("spikeBinMs", "double", 2)]),
        ("TensorFlow Logistics", [
            ("c_allow_gpu_growth", "logical", True), ("c_max_ckpt_to_keep", "uint16", 5),
            ("c_max_ckpt_to_keep_lve", "uint16", 5), ("c_device", "char", "/gpu:0")]),
        ("Optimization", [
            ("c_learning_rate_init", "double", 0.01), ("c_learning_rate_decay_factor", "double", 0.98),
            ("c_learning_rate_n_to_compare", "uint16", 6), ("c_learning_rate_stop", "double", 0.00001),
            ("c_max_grad_norm", "double", 200), ("trainToTestRatio", "uint16", 4),
            ("c_batch_size", "uint16", 256), ("c_cell_clip_value", "double", 5)]),
        ("Overfitting", [
            ("c_temporal_spike_jitter_width", "uint16", 0), ("c_keep_prob", "double", 0.95),
            ("c_l2_gen_scale", "double", 500), ("c_l2_con_scale", "double", 500),
            ("c_co_mean_corr_scale", "double", 0)]),
        ("Underfitting", [
            ("c_kl_ic_weight", "double", 1), ("c_kl_co_weight", "double", 1),
            ("c_kl_start_step", "uint32", 0), ("c_kl_increase_steps", "uint32", 900),
            ("c_l2_start_step", "uint32", 0), ("c_l2_increase_steps", "uint32", 900),
            ("scaleIncreaseStepsWithDatasets", "logical", True), ("scaleStartStepWithDatasets", "logical", True)]),
        ("External inputs", [
            ("c_ext_input_dim", "uint16", 0), ("c_inject_ext_input_to_gen", "logical", False)]),
        ("Controller and inferred inputs", [
            ("c_co_dim", "uint16", 4), ("c_prior_ar_atau", "double", 10),
            ("c_do_train_prior_ar_atau", "logical", True), ("c_prior_ar_nvar", "double", 0.1),
            ("c_do_train_prior_ar_nvar", "logical", True), ("c_do_causal_controller", "logical", False),
            ("c_do_feed_factors_to_controller", "logical", True),
            ("c_feedback_factors_or_rates", "char", "factors"), ("c_controller_input_lag", "uint16", 1),
            ("c_ci_enc_dim", "uint16", 128), ("c_con_dim", "uint16", 128), ("c_co_prior_var_scale", None, 0.1)]),
        ("Encoder and initial conditions for generator", [
            ("c_num_steps_for_gen_ic", "uint32", 4294967295), ("c_ic_dim", "uint16", 64),
            ("c_ic_enc_dim", "uint16", 128), ("c_ic_prior_var_min", "double", 0.1),
            ("c_ic_prior_var_scale", "double", 0.1), ("c_ic_prior_var_max", "double", 0.1),
            ("c_ic_post_var_min", "double", 0.0001)]),
        ("Generator network, factors, rates", [
            ("c_cell_weight_scale", "double", 1.0), ("c_gen_dim", "uint16", 100),
            ("c_gen_cell_input_weight_scale", "double", 1.0), ("c_gen_cell_rec_weight_scale", "double", 1.0),
            ("c_factors_dim", "uint16", 50), ("c_output_dist", "char", "poisson")]),
        ("Stitching multi-session models", [
            ("c_do_train_readin", "logical", True), ("useAlignmentMatrix", "logical", False),
            ("useSingleDatasetAlignmentMatrix", "logical", False),
            ("alignmentApproach", "char", "regressGlobalPCs"), ("alignmentExtraArgs", "cell", ())]),
        ("Posterior sampling", [
            ("posterior_mean_kind", "char", "posterior_sample_and_average"), ("num_samples_posterior", None, 512)]),
        ("TensorFlow Debugging", [
            ("c_tf_debug_cli", "logical", False), ("c_tf_debug_tensorboard", "logical", False),
            ("c_tf_debug_tensorboard_hostport", "char", "localhost:6064"), ("c_tf_debug_dump_root", None, ""),
            ("c_debug_verbose", None, False), ("c_debug_reduce_timesteps_to", None, None),
            ("c_debug_print_each_step", None, False)]),
        ("Hidden", [
            ("c_in_factors_dim", "uint16", 50), ("setInFactorsMatchDataForSingleDataset", "logical", False)]),
    ]
    return tuple(
        _declared(Hyperparameter(name, cls, default, group, hidden=(group == "Hidden")))
        for group, entries in groups
        for name, cls, default in entries
    )


NOT_AFFECTING_HASH = frozenset({
    "name", "version", "num_samples_posterior", "posterior_mean_kind", "c_tf_debug_cli", "c_tf_debug_tensorboard",
    "c_tf_debug_tensorboard_hostport", "c_tf_debug_dump_root", "c_debug_verbose", "c_debug_reduce_timesteps_to",
    "c_debug_print_each_step",
})
_SCALED_BY_FLAG = {
    "c_kl_increase_steps": "scaleIncreaseStepsWithDatasets",
    "c_l2_increase_steps": "scaleIncreaseStepsWithDatasets",
    "c_kl_start_step": "scaleStartStepWithDatasets",
    "c_l2_start_step": "scaleStartStepWithDatasets",
}


def _freeze(value):
    """Immutable, comparable storage: lists become tuples, arrays read-only copies."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        array = value.copy()
        array.setflags(write=False)
        return array
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_value(value):
    """A stored value in JSON-ready form (arrays and tuples as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    return value


def _is_real_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _one_element(value):
    """The element of a one-element list or array (in MATLAB a 1x1 array is the scalar), else ``value``."""
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nesting
            return value
        if array.size == 1 and array.dtype.kind in "biuf":
            return array.reshape(()).item()
    return value


def coerce_value(spec: Hyperparameter, value):
    """Check ``value`` against the parameter's MATLAB class; return the stored form."""
    cls = spec.matlab_class
    if cls not in (None, "char", "cell"):
        value = _one_element(value)

    def fail(expected):
        raise ValidationError(f"hyperparameter {spec.name} ({cls or 'untyped'}) must be {expected}, got {value!r}")

    if cls is None:
        try:
            infer_matlab_class(_freeze(value))
        except ValidationError:
            fail("a number, logical, string or list")
        return _freeze(value)
    if cls == "char":
        return value if isinstance(value, str) else fail("a string")
    if cls == "logical":
        if isinstance(value, (bool, np.bool_)) or (_is_real_number(value) and value in (0, 1)):
            return bool(value)
        fail("true or false")
    if cls == "cell":
        return _freeze(value) if isinstance(value, (list, tuple)) else fail("a list (a MATLAB cell)")
    if cls in _INTEGER_RANGES:
        lo, hi = _INTEGER_RANGES[cls]
        if _is_real_number(value) and float(value).is_integer() and lo <= value <= hi:
            return int(value)
        fail(f"an integer in [{lo}, {hi}]")
    if _is_real_number(value):
        return float(value)
    array = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if array is not None and array.dtype.kind in "iuf":
        return _freeze(array.astype(NUMERIC_CLASSES[cls]))
    fail("a real number or an array of them")


def _declared(spec: Hyperparameter) -> Hyperparameter:
    """The declaration with its default in stored form (checked against the class)."""
    return replace(spec, default=coerce_value(spec, spec.default))


def _values_equal(a, b) -> bool:
    """MATLAB ``isequal``: the numeric class does not matter, MATLAB sizes and values do (``[2]`` equals ``2``)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(_values_equal(x, y) for x, y in zip(a, b)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_arr, b_arr = (np.zeros((0, 0)) if v is None else np.asarray(v) for v in (a, b))
        dims = matlab_dims(a_arr)
        return dims == matlab_dims(b_arr) and np.array_equal(a_arr.reshape(dims), b_arr.reshape(dims))
    if isinstance(a, str) != isinstance(b, str):
        return False
    return a == b


def _is_empty(value) -> bool:
    """MATLAB ``isempty``: None, ``''``, an empty cell or an empty array."""
    if isinstance(value, np.ndarray):
        return value.size == 0
    return value is None or (isinstance(value, (str, tuple)) and not value)


def _format_value(value) -> str:
    """MATLAB-like display of one value: ``0.001``, ``true``, ``'poisson'``, ``{1x2 cell}``, ``[]``."""
    if value is None or (isinstance(value, np.ndarray) and value.size == 0):
        return "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return f"{{1x{len(value)} cell}}" if value else "{}"
    if isinstance(value, np.ndarray):
        return "[" + " ".join(f"{v:g}" for v in value.ravel()) + "]" if value.size <= 6 else (
            f"[{'x'.join(map(str, value.shape))} {value.dtype}]")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _command_line_value(spec: Hyperparameter, value) -> str:
    """Flag value by MATLAB class: logicals true/false, numbers plainly (doubles so that they round-trip), text.

    Anything else (arrays of several elements, cells, structs) is an error, as in MATLAB.
    """
    cls = spec.matlab_class or infer_matlab_class(value)
    value = _one_element(value) if isinstance(value, np.ndarray) else value
    if cls == "char":
        return value
    if cls == "logical" and isinstance(value, bool):
        return "true" if value else "false"
    if cls in NUMERIC_CLASSES and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    raise ValidationError(f"hyperparameter {spec.name} holds {_format_value(value)} (MATLAB {cls}); only single "
                          f"numbers, logicals and text can be command-line flags")


class RunParams:
    """LFADS hyperparameters; ``==`` means "same param hash", as in MATLAB.

    >>> p = RunParams(c_batch_size=150, c_factors_dim=8, c_co_dim=0, c_ic_enc_dim=64,
    ...               c_gen_dim=64, c_learning_rate_stop=0.001)
    >>> p.param_hash, p.data_hash
    ('param_YOs74u', 'data_4MaTKO')
    """

    PARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = _table()
    EXTRA_PARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = ()
    _BY_NAME: ClassVar[dict[str, Hyperparameter]] = {p.name: p for p in PARAMETERS}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        extra = tuple(
            _declared(replace(p, root=False, hidden=False, group=p.group or f"{cls.__name__} Specific Properties"))
            for p in cls.__dict__.get("EXTRA_PARAMETERS", ())
        )
        clashes = [p.name for p in extra if p.name in cls._BY_NAME]
        if clashes:
            raise ValidationError(f"{cls.__name__} redeclares existing hyperparameters {clashes}")
        cls.PARAMETERS = cls.PARAMETERS + extra
        cls._BY_NAME = {p.name: p for p in cls.PARAMETERS}

    def __init__(self, **values):
        object.__setattr__(self, "_values", {p.name: p.default for p in self.PARAMETERS})
        object.__setattr__(self, "_hashes", None)
        for name, value in values.items():
            setattr(self, name, value)

    # ---- access ----------------------------------------------------------------
    @classmethod
    def parameter(cls, name: str) -> Hyperparameter:
        """The declaration of one hyperparameter; unknown names get a close-match suggestion."""
        try:
            return cls._BY_NAME[name]
        except KeyError:
            raise UnknownParameterError(cls._unknown_message(name)) from None

    @classmethod
    def _unknown_message(cls, name: str) -> str:
        close = difflib.get_close_matches(name, cls._BY_NAME, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; see {cls.__name__}.parameter_names()"
        return f"{cls.__name__} has no hyperparameter {name!r}{hint}"

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [p.name for p in cls.PARAMETERS]

    def __getattr__(self, name):
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        if name.startswith("_") or values is None:
            raise AttributeError(name)
        raise AttributeError(self._unknown_message(name))

    def __setattr__(self, name, value):
        spec = self.parameter(name)
        self._values[name] = coerce_value(spec, value)
        object.__setattr__(self, "_hashes", None)

    def __dir__(self):
        return list(super().__dir__()) + self.parameter_names()

    def __copy__(self) -> "RunParams":
        return self.copy()

    def __deepcopy__(self, memo) -> "RunParams":
        return self.copy()

    def copy(self, **changes) -> "RunParams":
        """A copy with some values changed (RunParams is a value class in MATLAB)."""
        new = type(self)()
        new._values.update(self._values)
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def sweep(self, **values: Iterable) -> list["RunParams"]:
        """One copy per combination of values; the first keyword varies fastest (as ``generateSweep``)."""
        names = list(values)
        grids = [list(values[n]) for n in names]
        combos = itertools.product(*reversed(grids))
        return [self.copy(**dict(zip(names, reversed(combo)))) for combo in combos]

    def to_dict(self) -> dict:
        """Every value by name (arrays as lists), e.g. for JSON."""
        return {k: json_value(v) for k, v in self._values.items()}

    def differences(self) -> dict:
        """Values that differ from their defaults (``name`` and ``version`` left out)."""
        return {
            p.name: self._values[p.name]
            for p in self.PARAMETERS
            if p.name not in ("name", "version") and not _values_equal(self._values[p.name], p.default)
        }

    def short_differences(self) -> str:
        """``c_learning_rate_stop=0.001 c_batch_size=150 ...`` or ``default``."""
        diffs = self.differences()
        return " ".join(f"{k}={_format_value(v)}" for k, v in diffs.items()) or "default"

    # ---- hashes ----------------------------------------------------------------
    def _struct(self, ignore) -> dict:
        return {
            p.name: (p.matlab_class or infer_matlab_class(self._values[p.name]), self._values[p.name])
            for p in self.PARAMETERS
            if p.name not in ignore and not _values_equal(self._values[p.name], p.default)
        }

    def hash_struct(self) -> dict:
        """``{name: (matlab_class, value)}`` that the param hash is computed from."""
        return self._struct(NOT_AFFECTING_HASH)

    def data_hash_struct(self) -> dict:
        """The struct of the data hash: the parameters that change the LFADS input files."""
        keep_factors = self.version >= DEFAULT_VERSION
        root_cli = {
            p.name for p in self.PARAMETERS
            if p.root and p.name.startswith("c_") and not (keep_factors and p.name == "c_factors_dim")
        }
        return self._struct(NOT_AFFECTING_HASH | root_cli)

    def _computed_hashes(self) -> tuple[str, str]:
        if self._hashes is None:
            hashes = (struct_hash(self.hash_struct()), struct_hash(self.data_hash_struct()))
            object.__setattr__(self, "_hashes", hashes)
        return self._hashes

    @property
    def param_hash(self) -> str:
        """``'param_XXXXXX'``: the name of this parameter set's folder."""
        return "param_" + self._computed_hashes()[0]

    @property
    def data_hash(self) -> str:
        """``'data_XXXXXX'``: the name of the folder of the LFADS input files."""
        return "data_" + self._computed_hashes()[1]

    def __eq__(self, other):
        if not isinstance(other, RunParams):
            return NotImplemented
        return type(self).__name__ == type(other).__name__ and self.param_hash == other.param_hash

    def __hash__(self):
        return hash((type(self).__name__, self.param_hash))

    # ---- LFADS command line -----------------------------------------------------
    def command_line_options(self, num_datasets: int = 1, omit: Iterable[str] = ()) -> list[str]:
        """``--name=value`` flags for ``run_lfads.py``: every ``c_`` parameter without its prefix.

        Empty values are skipped, the hidden ``c_in_factors_dim`` is given only when
        changed, and the KL/L2 step counts are multiplied by ``num_datasets`` when the
        scale flags are set (the hashed values stay unscaled).
        """
        omit = set(omit)
        for name in omit:
            self.parameter(name)
        flags = []
        for p in self.PARAMETERS:
            value = self._values[p.name]
            if not p.name.startswith("c_") or p.name in omit:
                continue
            if _is_empty(value) or (p.hidden and _values_equal(value, p.default)):
                continue
            if p.name in _SCALED_BY_FLAG and self._values[_SCALED_BY_FLAG[p.name]]:
                value = min(value * int(num_datasets), _INTEGER_RANGES[p.matlab_class][1])  # MATLAB saturates
            flags.append(f"--{p.name[2:]}={_command_line_value(p, value)}")
        return flags

    # ---- display ---------------------------------------------------------------
    def _groups(self) -> list[tuple[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        for p in self.PARAMETERS:
            if not p.hidden:
                groups.setdefault(p.group, []).append(p.name)
        standard = {p.group for p in RunParams.PARAMETERS}
        own = [(g, n) for g, n in groups.items() if g not in standard]  # subclass groups come first, as in MATLAB
        rest = [(g, n) for g, n in groups.items() if g in standard]
        return own + [("Computed hashes", ["param_hash", "data_hash"])] + rest

    def __repr__(self) -> str:
        groups = self._groups()
        width = max(len(n) for _, names in groups for n in names) + 4
        lines = [f'{type(self).__name__} {self.param_hash} {self.data_hash} "{self.name}"',
                 f"  {self.short_differences()}", ""]
        for title, names in groups:
            lines.append(f"   {title}")
            for n in names:
                value = getattr(self, n)
                lines.append(f"{n.rjust(width)}: {value if n.endswith('_hash') else _format_value(value)}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"
