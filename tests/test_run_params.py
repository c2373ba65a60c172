"""RunParams: the MATLAB-compatible hashes (reference test vectors and serialization rules),
validation, subclassing, command-line flags and display."""

import base64
import copy
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lds.errors import UnknownParameterError, ValidationError
from lfads_tools import Hyperparameter, RunParams
from lfads_tools.matlab_hash import serialize

# ---- an independent, plainly written DataHash serializer (reference section 2.4) -------------

_FORMATS = {"double": "d", "single": "f", "uint16": "H", "uint32": "I", "int16": "h", "int32": "i",
            "uint8": "B", "int8": "b", "uint64": "Q", "int64": "q"}


def _oracle_header(cls, dims):
    return cls.encode() + struct.pack("<Q", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)


def _oracle_scalar(cls, value):
    if cls in ("uint32", "uint64"):
        cls = "uint16" if value <= 65535 else ("uint32" if value <= 4294967295 else cls)
    elif cls in ("int32", "int64"):
        if -32768 <= value <= 32767:
            cls = "int16"
        elif -2147483648 <= value < 2147483647:
            cls = "int32"
    if cls == "logical":
        return _oracle_header("logical", (1, 1)) + bytes([1 if value else 0])
    if cls == "char":
        units = []
        for c in value:  # UTF-16 by hand: code points from U+10000 take a surrogate pair
            cp = ord(c)
            units += [cp] if cp < 0x10000 else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)]
        dims = (1, len(units)) if units else (0, 0)
        return _oracle_header("char", dims) + b"".join(struct.pack("<H", u) for u in units)
    return _oracle_header(cls, (1, 1)) + struct.pack("<" + _FORMATS[cls], value)


def oracle_hash(fields):
    """MD5 of the DataHash bytes of a 1x1 struct of scalars/strings, base64url, 6 characters."""
    data = _oracle_header("struct", (1, 1))
    for name in sorted(fields):
        cls, value = fields[name]
        data += name.encode() + _oracle_scalar(cls, value)
    return base64.b64encode(hashlib.md5(data).digest()).decode().replace("+", "-").replace("/", "_")[:6]


# ---- the documented test vectors --------------------------------------------------------------

SINGLE_SESSION = dict(c_learning_rate_stop=0.001, c_batch_size=150, c_co_dim=0, c_ic_enc_dim=64, c_gen_dim=64,
                      c_factors_dim=8)


@pytest.mark.parametrize(
    "changes, param_hash, data_hash",
    [
        ({}, "param_T4MzIi", "data_T4MzIi"),
        (SINGLE_SESSION, "param_YOs74u", "data_4MaTKO"),
        ({**SINGLE_SESSION, "useAlignmentMatrix": True}, "param_Qr2PeG", "data_RE1kuL"),
        ({**SINGLE_SESSION, "c_factors_dim": 2}, "param_Z1-4Ne", "data_cq1HAe"),
        ({**SINGLE_SESSION, "c_factors_dim": 4}, "param_UEvXAB", "data_QcdNGf"),
        ({**SINGLE_SESSION, "c_factors_dim": 6}, "param_m8Dk5i", "data_y3K_k3"),
        ({**SINGLE_SESSION, "c_factors_dim": 8}, "param_YOs74u", "data_4MaTKO"),
    ],
)
def test_documented_hashes(changes, param_hash, data_hash):
    params = RunParams(**changes)
    assert params.param_hash == param_hash
    assert params.data_hash == data_hash


def test_documented_byte_example():
    expected = (b"struct" + struct.pack("<3Q", 2, 1, 1) + b"c_factors_dim" + b"uint16" + struct.pack("<3Q", 2, 1, 1)
                + b"\x08\x00")
    assert serialize({"c_factors_dim": ("uint16", 8)}, "struct") == expected


def test_sweep_in_docs_varies_first_keyword_fastest():
    sweep = RunParams(**SINGLE_SESSION).sweep(c_factors_dim=[2, 4, 6, 8])
    assert [p.param_hash for p in sweep] == ["param_Z1-4Ne", "param_UEvXAB", "param_m8Dk5i", "param_YOs74u"]
    grid = RunParams().sweep(c_co_dim=[0, 4], c_gen_dim=[32, 64, 100])
    assert [(p.c_co_dim, p.c_gen_dim) for p in grid] == [(0, 32), (4, 32), (0, 64), (4, 64), (0, 100), (4, 100)]


# ---- properties of the serialization rules ---------------------------------------------------

# getListPropertiesNotAffectingHash() of the reference, plus name and version
NOT_HASHED = {"name", "version", "num_samples_posterior", "posterior_mean_kind", "c_tf_debug_cli",
              "c_tf_debug_tensorboard", "c_tf_debug_tensorboard_hostport", "c_tf_debug_dump_root", "c_debug_verbose",
              "c_debug_reduce_timesteps_to", "c_debug_print_each_step"}
HASHED = [p for p in RunParams.PARAMETERS if p.name not in NOT_HASHED]
INTEGER_PARAMS = [p for p in HASHED if p.matlab_class in ("uint16", "uint32")]
FLAG_PARAMS = [p for p in HASHED if p.matlab_class == "logical"]
DOUBLE_PARAMS = [p for p in HASHED if p.matlab_class == "double"]


@st.composite
def param_changes(draw):
    """A few hyperparameters that affect the param hash, with random non-default values."""
    changes = {}
    for p in draw(st.lists(st.sampled_from(INTEGER_PARAMS), max_size=4, unique_by=lambda p: p.name)):
        top = 65535 if p.matlab_class == "uint16" else 4294967295
        changes[p.name] = (p.matlab_class, draw(st.integers(0, top)))
    for p in draw(st.lists(st.sampled_from(FLAG_PARAMS), max_size=3, unique_by=lambda p: p.name)):
        changes[p.name] = ("logical", not p.default)
    for p in draw(st.lists(st.sampled_from(DOUBLE_PARAMS), max_size=3, unique_by=lambda p: p.name)):
        changes[p.name] = ("double", draw(st.floats(allow_nan=False, allow_infinity=False, width=64)))
    if draw(st.booleans()):
        changes["c_device"] = ("char", draw(st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)),
                                                    max_size=12)))
    return {k: v for k, v in changes.items() if v[1] != RunParams.parameter(k).default}


@settings(max_examples=60, deadline=None)
@given(param_changes(), st.randoms())
def test_param_hash_matches_independent_serializer_in_any_order(changes, rng):
    names = list(changes)
    rng.shuffle(names)  # keyword order must not matter: fields are sorted by code point
    params = RunParams(**{n: changes[n][1] for n in names})
    assert params.param_hash == "param_" + oracle_hash(changes)


INTEGER_RANGES = {"uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
                  "int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(INTEGER_RANGES)), st.data())
def test_integer_downsizing_matches_rules(cls, data):
    value = data.draw(st.integers(*INTEGER_RANGES[cls]))
    assert serialize(value, cls) == _oracle_scalar(cls, value)


def test_integer_downsizing_boundaries():
    assert serialize(65535, "uint32")[:6] == b"uint16" and serialize(65536, "uint32")[:6] == b"uint32"
    assert serialize(-32768, "int32")[:5] == b"int16" and serialize(32768, "int32")[:5] == b"int32"
    assert serialize(2147483647, "int64")[:5] == b"int64"  # the upper bound is strict in DataHash
    assert serialize(2147483646, "int64")[:5] == b"int32"
    assert serialize(np.zeros((0,), dtype=np.uint32), "uint32")[:6] == b"uint32"  # empty keeps its class


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=20), st.booleans())
def test_char_and_logical_encodings(text, flag):
    assert serialize(text, "char") == _oracle_scalar("char", text)
    assert serialize(flag, "logical") == _oracle_scalar("logical", flag)


def test_char_length_counts_utf16_code_units():
    assert serialize("a\U0001F600", "char")[4:28] == struct.pack("<3Q", 2, 1, 3)  # MATLAB: 1x3 char


def test_empty_values_and_cells():
    empty_header = struct.pack("<3Q", 2, 0, 0)
    assert serialize("", "char") == b"char" + empty_header
    assert serialize(None, "double") == b"double" + empty_header
    assert serialize((), "cell") == b"cell" + empty_header
    cell = serialize(("ridgeNormalizeEach", True), "cell")
    assert cell == (b"cell" + struct.pack("<3Q", 2, 1, 2) + _oracle_scalar("char", "ridgeNormalizeEach")
                    + _oracle_scalar("logical", True))
    matrix = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert serialize(matrix, "double") == b"double" + struct.pack("<3Q", 2, 2, 2) + struct.pack("<4d", 1, 3, 2, 4)


# ---- which parameters enter which hash ---------------------------------------------------------

def test_label_and_posterior_options_never_change_hashes():
    base = RunParams(**SINGLE_SESSION)
    other = base.copy(name="my run", posterior_mean_kind="posterior_push_mean", num_samples_posterior=64,
                      c_debug_verbose=True, version=20180131)
    assert (other.param_hash, other.data_hash) == (base.param_hash, base.data_hash)
    assert other == base


def test_data_hash_keeps_only_input_shaping_parameters():
    base = RunParams()
    assert base.copy(c_batch_size=100).data_hash == base.data_hash
    assert base.copy(c_batch_size=100).param_hash != base.param_hash
    for name, value in [("spikeBinMs", 10), ("trainToTestRatio", 3), ("useAlignmentMatrix", True),
                        ("c_factors_dim", 8), ("alignmentExtraArgs", ["ridgeNormalizeEach", True]),
                        ("scaleStartStepWithDatasets", False)]:
        assert base.copy(**{name: value}).data_hash != base.data_hash, name
    # before 20171107 every root c_ property, c_factors_dim included, is left out of the data hash
    assert RunParams(c_factors_dim=8, version=20170101).data_hash == "data_T4MzIi"


def test_double_property_given_an_int_hashes_as_double():
    assert RunParams(spikeBinMs=10).param_hash == "param_" + oracle_hash({"spikeBinMs": ("double", 10.0)})
    assert RunParams(c_co_prior_var_scale=1).param_hash == "param_" + oracle_hash(
        {"c_co_prior_var_scale": ("double", 1.0)})


class HandParams(RunParams):
    EXTRA_PARAMETERS = (Hyperparameter("useHandKinematics", "logical", False),
                        Hyperparameter("c_window_ms", "double", (-100, 500)))


def test_subclass_parameters_join_hashes_only_when_changed():
    base = RunParams(**SINGLE_SESSION)
    sub = HandParams(**SINGLE_SESSION)
    assert (sub.param_hash, sub.data_hash) == (base.param_hash, base.data_hash)
    sub.useHandKinematics = True
    expected = dict((k, (RunParams.parameter(k).matlab_class, v)) for k, v in SINGLE_SESSION.items())
    assert sub.param_hash == "param_" + oracle_hash({**expected, "useHandKinematics": ("logical", True)})
    assert sub.data_hash == "data_" + oracle_hash({"c_factors_dim": ("uint16", 8),
                                                   "useHandKinematics": ("logical", True)})
    # a c_-prefixed subclass property also joins the data hash, and arrays hash as MATLAB row vectors
    windowed = HandParams(c_window_ms=[-200, 500])
    assert windowed.data_hash != RunParams().data_hash
    assert sub != base  # different classes never compare equal
    assert "HandParams Specific Properties" in repr(sub).split("Computed hashes")[0]


def test_one_element_values_equal_scalars_as_in_matlab_isequal():
    assert RunParams(spikeBinMs=[2]).param_hash == "param_T4MzIi"  # [2] is 2 in MATLAB: the default
    assert RunParams(spikeBinMs=np.array([[10.0]])).param_hash == RunParams(spikeBinMs=10).param_hash
    assert RunParams(c_batch_size=[150]).c_batch_size == 150 and RunParams(useAlignmentMatrix=[True]).useAlignmentMatrix
    assert isinstance(RunParams(spikeBinMs=np.array([5])).spikeBinMs, float)
    # a 1x2 row is the default (-100, 500) however it is nested; a 2x1 column is not
    assert HandParams(c_window_ms=[[-100, 500]]).differences() == {}
    assert HandParams(c_window_ms=np.array([[-100], [500]])).param_hash != HandParams().param_hash
    assert RunParams(alignmentExtraArgs=[np.array([1.0]), "x"]) == RunParams(alignmentExtraArgs=[1, "x"])


def test_copy_module_gives_independent_params_with_fresh_hashes():
    original = RunParams(c_factors_dim=8)
    before = original.param_hash
    for twin in (copy.copy(original), copy.deepcopy(original)):
        twin.c_factors_dim = 4
        assert twin.param_hash == RunParams(c_factors_dim=4).param_hash
        assert original.c_factors_dim == 8 and original.param_hash == before


def test_subclass_groups_are_shown_before_the_standard_ones():
    class Windowed(RunParams):
        EXTRA_PARAMETERS = (Hyperparameter("windowMs", "double", (-100, 500), group="Windows"),
                            Hyperparameter("c_extra_scale", "double", 1, group="Optimization"))

    text = repr(Windowed())
    assert text.index("Windows") < text.index("Computed hashes")
    optimization = text[text.index("   Optimization"):text.index("   Overfitting")]
    assert "c_extra_scale" in optimization  # a standard title gathers the subclass parameter in that group


def test_subclass_cannot_redeclare():
    with pytest.raises(ValidationError, match="c_batch_size"):
        class Bad(RunParams):
            EXTRA_PARAMETERS = (Hyperparameter("c_batch_size", "uint16", 10),)


# ---- validation ------------------------------------------------------------------------------

def test_unknown_names_get_a_suggestion():
    with pytest.raises(UnknownParameterError, match="did you mean c_batch_size"):
        RunParams(c_batchsize=3)
    params = RunParams()
    with pytest.raises(UnknownParameterError, match="c_factors_dim"):
        params.c_factor_dim = 3
    with pytest.raises(AttributeError, match="did you mean spikeBinMs"):
        params.spikeBinMS


@pytest.mark.parametrize("name, value", [("c_batch_size", -1), ("c_batch_size", 1.5), ("c_batch_size", 70000),
                                         ("c_batch_size", "150"), ("useAlignmentMatrix", 2), ("c_device", 0),
                                         ("spikeBinMs", "ten"), ("alignmentExtraArgs", "x"),
                                         ("c_co_prior_var_scale", {1, 2})])
def test_values_are_checked_against_the_matlab_class(name, value):
    with pytest.raises(ValidationError, match=name):
        RunParams(**{name: value})


def test_integral_floats_are_accepted_for_integer_classes():
    assert RunParams(c_batch_size=150.0).param_hash == RunParams(c_batch_size=150).param_hash


# ---- command line ----------------------------------------------------------------------------

def test_command_line_options():
    params = RunParams(**SINGLE_SESSION, c_learning_rate_init=1e-7)
    flags = params.command_line_options(num_datasets=3)
    assert "--batch_size=150" in flags and "--factors_dim=8" in flags and "--co_dim=0" in flags
    assert "--allow_gpu_growth=true" in flags and "--inject_ext_input_to_gen=false" in flags
    assert "--kl_increase_steps=2700" in flags and "--l2_increase_steps=2700" in flags
    assert float(next(f for f in flags if f.startswith("--learning_rate_init=")).split("=")[1]) == 1e-7
    assert not any(f.startswith(("--in_factors_dim", "--tf_debug_dump_root", "--debug_reduce_timesteps_to",
                                 "--spikeBinMs", "--trainToTestRatio")) for f in flags)
    assert "--batch_size=150" not in params.command_line_options(omit=["c_batch_size"])
    assert "--in_factors_dim=20" in params.copy(c_in_factors_dim=20).command_line_options()
    unscaled = params.copy(scaleIncreaseStepsWithDatasets=False).command_line_options(num_datasets=3)
    assert "--kl_increase_steps=900" in unscaled
    assert all(f.startswith("--") and "=" in f for f in flags)


def test_command_line_values_by_matlab_class():
    flags = RunParams(c_learning_rate_init=np.array(0.5), c_co_prior_var_scale=np.array(0.2),
                      c_debug_reduce_timesteps_to=7).command_line_options()
    assert {"--learning_rate_init=0.5", "--co_prior_var_scale=0.2", "--debug_reduce_timesteps_to=7"} <= set(flags)
    # uint32 step counts scaled by the number of datasets saturate as in MATLAB
    assert "--kl_increase_steps=4294967295" in RunParams(c_kl_increase_steps=4294967295).command_line_options(2)
    for value in ([0.1], (0.1, 0.2), {"a": 1}, np.array([0.1, 0.2])):
        params = RunParams(c_co_prior_var_scale=value)
        with pytest.raises(ValidationError, match="c_co_prior_var_scale holds .* only single numbers"):
            params.command_line_options()
        assert params.command_line_options(omit=["c_co_prior_var_scale"])


def test_subclass_c_parameters_become_flags():
    class Flagged(RunParams):
        EXTRA_PARAMETERS = (Hyperparameter("c_extra_dim", "uint16", 3), Hyperparameter("c_extra_on", "logical", False),
                            Hyperparameter("c_extra_name", "char", "abc"), Hyperparameter("useExtra", "logical", True))

    flags = Flagged(c_extra_dim=7).command_line_options()
    assert {"--extra_dim=7", "--extra_on=false", "--extra_name=abc"} <= set(flags)
    assert not any("useExtra" in f for f in flags)


def test_repr_is_grouped_and_shows_hashes():
    text = repr(RunParams(**SINGLE_SESSION, name="small"))
    assert text.startswith('RunParams param_YOs74u data_4MaTKO "small"')
    assert "c_learning_rate_stop=0.001 c_batch_size=150" in text
    titles = ["Computed hashes", "Run Manager logistics and data processing", "TensorFlow Logistics", "Optimization",
              "Overfitting", "Underfitting", "External inputs", "Controller and inferred inputs",
              "Encoder and initial conditions for generator", "Generator network, factors, rates",
              "Stitching multi-session models", "Posterior sampling", "TensorFlow Debugging"]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)
    assert "c_in_factors_dim" not in text  # hidden
    assert RunParams().short_differences() == "default"


# ---- the hyperparameter table of the reference (section 6.1), written out from its text -------------

# (name, MATLAB class or None for untyped, default, hidden, P: param hash, D: data hash, CLI flag)
# CLI: "yes" always emitted, "set" only while non-empty / changed (hidden), "no" never.
REFERENCE_TABLE = [
    ("name", "char", "", False, False, False, "no"),
    ("version", "uint32", 20171107, False, False, False, "no"),
    ("spikeBinMs", "double", 2, False, True, True, "no"),
    ("c_allow_gpu_growth", "logical", True, False, True, False, "yes"),
    ("c_max_ckpt_to_keep", "uint16", 5, False, True, False, "yes"),
    ("c_max_ckpt_to_keep_lve", "uint16", 5, False, True, False, "yes"),
    ("c_device", "char", "/gpu:0", False, True, False, "yes"),
    ("c_learning_rate_init", "double", 0.01, False, True, False, "yes"),
    ("c_learning_rate_decay_factor", "double", 0.98, False, True, False, "yes"),
    ("c_learning_rate_n_to_compare", "uint16", 6, False, True, False, "yes"),
    ("c_learning_rate_stop", "double", 0.00001, False, True, False, "yes"),
    ("c_max_grad_norm", "double", 200, False, True, False, "yes"),
    ("trainToTestRatio", "uint16", 4, False, True, True, "no"),
    ("c_batch_size", "uint16", 256, False, True, False, "yes"),
    ("c_cell_clip_value", "double", 5, False, True, False, "yes"),
    ("c_temporal_spike_jitter_width", "uint16", 0, False, True, False, "yes"),
    ("c_keep_prob", "double", 0.95, False, True, False, "yes"),
    ("c_l2_gen_scale", "double", 500, False, True, False, "yes"),
    ("c_l2_con_scale", "double", 500, False, True, False, "yes"),
    ("c_co_mean_corr_scale", "double", 0, False, True, False, "yes"),
    ("c_kl_ic_weight", "double", 1, False, True, False, "yes"),
    ("c_kl_co_weight", "double", 1, False, True, False, "yes"),
    ("c_kl_start_step", "uint32", 0, False, True, False, "yes"),
    ("c_kl_increase_steps", "uint32", 900, False, True, False, "yes"),
    ("c_l2_start_step", "uint32", 0, False, True, False, "yes"),
    ("c_l2_increase_steps", "uint32", 900, False, True, False, "yes"),
    ("scaleIncreaseStepsWithDatasets", "logical", True, False, True, True, "no"),
    ("scaleStartStepWithDatasets", "logical", True, False, True, True, "no"),
    ("c_ext_input_dim", "uint16", 0, False, True, False, "yes"),
    ("c_inject_ext_input_to_gen", "logical", False, False, True, False, "yes"),
    ("c_co_dim", "uint16", 4, False, True, False, "yes"),
    ("c_prior_ar_atau", "double", 10, False, True, False, "yes"),
    ("c_do_train_prior_ar_atau", "logical", True, False, True, False, "yes"),
    ("c_prior_ar_nvar", "double", 0.1, False, True, False, "yes"),
    ("c_do_train_prior_ar_nvar", "logical", True, False, True, False, "yes"),
    ("c_do_causal_controller", "logical", False, False, True, False, "yes"),
    ("c_do_feed_factors_to_controller", "logical", True, False, True, False, "yes"),
    ("c_feedback_factors_or_rates", "char", "factors", False, True, False, "yes"),
    ("c_controller_input_lag", "uint16", 1, False, True, False, "yes"),
    ("c_ci_enc_dim", "uint16", 128, False, True, False, "yes"),
    ("c_con_dim", "uint16", 128, False, True, False, "yes"),
    ("c_co_prior_var_scale", None, 0.1, False, True, False, "yes"),
    ("c_num_steps_for_gen_ic", "uint32", 4294967295, False, True, False, "yes"),
    ("c_ic_dim", "uint16", 64, False, True, False, "yes"),
    ("c_ic_enc_dim", "uint16", 128, False, True, False, "yes"),
    ("c_ic_prior_var_min", "double", 0.1, False, True, False, "yes"),
    ("c_ic_prior_var_scale", "double", 0.1, False, True, False, "yes"),
    ("c_ic_prior_var_max", "double", 0.1, False, True, False, "yes"),
    ("c_ic_post_var_min", "double", 0.0001, False, True, False, "yes"),
    ("c_cell_weight_scale", "double", 1.0, False, True, False, "yes"),
    ("c_gen_dim", "uint16", 100, False, True, False, "yes"),
    ("c_gen_cell_input_weight_scale", "double", 1.0, False, True, False, "yes"),
    ("c_gen_cell_rec_weight_scale", "double", 1.0, False, True, False, "yes"),
    ("c_factors_dim", "uint16", 50, False, True, True, "yes"),
    ("c_output_dist", "char", "poisson", False, True, False, "yes"),
    ("c_do_train_readin", "logical", True, False, True, False, "yes"),
    ("useAlignmentMatrix", "logical", False, False, True, True, "no"),
    ("useSingleDatasetAlignmentMatrix", "logical", False, False, True, True, "no"),
    ("alignmentApproach", "char", "regressGlobalPCs", False, True, True, "no"),
    ("alignmentExtraArgs", "cell", (), False, True, True, "no"),
    ("posterior_mean_kind", "char", "posterior_sample_and_average", False, False, False, "no"),
    ("num_samples_posterior", None, 512, False, False, False, "no"),
    ("c_tf_debug_cli", "logical", False, False, False, False, "yes"),
    ("c_tf_debug_tensorboard", "logical", False, False, False, False, "yes"),
    ("c_tf_debug_tensorboard_hostport", "char", "localhost:6064", False, False, False, "yes"),
    ("c_tf_debug_dump_root", None, "", False, False, False, "set"),
    ("c_debug_verbose", None, False, False, False, False, "yes"),
    ("c_debug_reduce_timesteps_to", None, None, False, False, False, "set"),
    ("c_debug_print_each_step", None, False, False, False, False, "yes"),
    ("c_in_factors_dim", "uint16", 50, True, True, False, "set"),
    ("setInFactorsMatchDataForSingleDataset", "logical", False, True, True, True, "no"),
]


def _changed(default):
    """A value other than the default, of the same kind."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default - 1 if default >= 1 else default + 1
    if isinstance(default, str):
        return default + "x"
    return 7 if default is None else ("x",)


def test_hyperparameter_table_matches_the_reference():
    assert [(p.name, p.matlab_class, p.default, p.hidden) for p in RunParams.PARAMETERS] == [
        row[:4] for row in REFERENCE_TABLE]
    defaults = RunParams().command_line_options()
    for name, _, default, _, in_param_hash, in_data_hash, cli in REFERENCE_TABLE:
        changed = RunParams(**{name: _changed(default)})
        assert (name in changed.hash_struct(), name in changed.data_hash_struct()) == (in_param_hash, in_data_hash)
        flag = f"--{name[2:]}="
        emitted = (any(f.startswith(flag) for f in defaults), any(f.startswith(flag) for f in
                                                                   changed.command_line_options()))
        assert emitted == {"yes": (True, True), "set": (False, True), "no": (False, False)}[cli], name
