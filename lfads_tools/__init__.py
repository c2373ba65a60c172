"""Find, load, inspect and reuse trained LFADS models: a Python port of the analysis side
of the MATLAB lfads-run-manager."""

from lds import errors
from lds.containers import DatasetList

from .datasets import Dataset, DatasetCollection
from .fit_log import FitLog
from .lfads_torch import read_lfads_torch, to_lfads_torch_state_dict
from .model_trained_params import ModelTrainedParams
from .posterior_means import PosteriorMeans
from .run import Run
from .run_collection import RunCollection, RunSpec
from .run_params import Hyperparameter, RunParams
from .tf_model_params import export_hdf5, read_export_hdf5, read_tf_model_params, save_tf_model_params

__version__ = "0.1.0"

__all__ = ["errors", "DatasetList", "Hyperparameter", "RunParams", "Dataset", "DatasetCollection", "RunSpec",
           "RunCollection", "Run", "PosteriorMeans", "FitLog",
           "ModelTrainedParams", "read_tf_model_params", "save_tf_model_params", "export_hdf5", "read_export_hdf5",
           "read_lfads_torch", "to_lfads_torch_state_dict"]
