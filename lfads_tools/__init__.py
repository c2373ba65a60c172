"""Find, load, inspect and reuse trained LFADS models: a Python port of the analysis side
of the MATLAB lfads-run-manager."""

from lds import errors
from lds.containers import DatasetList

from .datasets import Dataset, DatasetCollection
from .fit_log import FitLog
from .posterior_means import PosteriorMeans
from .run import Run
from .run_collection import RunCollection, RunSpec
from .run_params import Hyperparameter, RunParams

__version__ = "0.1.0"

__all__ = ["errors", "DatasetList", "Hyperparameter", "RunParams", "Dataset", "DatasetCollection", "RunSpec",
           "RunCollection", "Run", "PosteriorMeans", "FitLog"]
