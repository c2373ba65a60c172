"""Linear dynamical systems in PyTorch: parameters, Kalman filtering and smoothing, EM,
orthogonalization, online filtering and parameter files (including Bonsai.ML.Lds.Torch's)."""

from . import data, errors
from .containers import DatasetList, FieldSpec, ParamsContainer
from .native import load_params, save_params
from .params import KalmanParams
from .synthetic import lorenz_spikes, random_stable_lds, sample_lds

__version__ = "0.1.0"

__all__ = [
    "data",
    "errors",
    "DatasetList",
    "FieldSpec",
    "ParamsContainer",
    "KalmanParams",
    "load_params",
    "save_params",
    "lorenz_spikes",
    "random_stable_lds",
    "sample_lds",
]
