"""Linear dynamical systems in PyTorch: parameters, Kalman filtering and smoothing, EM,
orthogonalization, online filtering and parameter files (including Bonsai.ML.Lds.Torch's)."""

from . import data, errors
from .containers import DatasetList, FieldSpec, ParamsContainer
from .em import EMResult, SufficientStatistics, expected_statistics, fit_em, m_step
from .kalman import FilterResult, SmootherResult, kalman_filter, kalman_smoother, log_likelihood
from .online import OnlineKalmanFilter
from .orthogonalize import orthogonalize
from . import bonsai, checkpoint, interop, native, partial
from .native import load_params, save_params
from .params import KalmanParams
from .subspace import subspace_identification
from .synthetic import lorenz_spikes, random_stable_lds, reference_start, sample_lds

__version__ = "0.1.0"

__all__ = [
    "data",
    "errors",
    "DatasetList",
    "FieldSpec",
    "ParamsContainer",
    "KalmanParams",
    "kalman_filter",
    "kalman_smoother",
    "log_likelihood",
    "FilterResult",
    "SmootherResult",
    "fit_em",
    "EMResult",
    "expected_statistics",
    "m_step",
    "SufficientStatistics",
    "subspace_identification",
    "orthogonalize",
    "OnlineKalmanFilter",
    "load_params",
    "save_params",
    "lorenz_spikes",
    "random_stable_lds",
    "reference_start",
    "sample_lds",
]
