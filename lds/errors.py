"""Exception and warning classes of the whole library (``lds`` and ``lfads_tools``).

Every error raised for bad input is one of these, with a message that names the
file, key or field, what was expected and what was found. Each class also derives
from the matching built-in exception so ``except ValueError`` keeps working.
"""


class LfadsToolsError(Exception):
    """Base class of every error this library raises on purpose."""


class ValidationError(LfadsToolsError, ValueError):
    """A value has the wrong type, shape, range or content."""


class ShapeError(ValidationError):
    """An array has a shape other than the one its field expects."""


class NotPositiveDefiniteError(ValidationError):
    """A covariance matrix is not symmetric positive definite."""


class DatasetNameError(LfadsToolsError, KeyError):
    """A dataset (session) name or index that does not exist."""

    def __str__(self):  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnknownParameterError(LfadsToolsError, KeyError):
    """A hyperparameter or field name that the object does not have."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class SearchError(LfadsToolsError, LookupError):
    """A run, run spec or parameter set that a search could not match."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class FileFormatError(LfadsToolsError, ValueError):
    """A file that is missing pieces, truncated, corrupt or of an unknown format."""


class ChecksumError(FileFormatError):
    """An array whose stored checksum does not match its content."""


class UnsafeCheckpointError(FileFormatError):
    """A checkpoint whose pickle stream asks for something the safe reader refuses."""


class MissingFileError(LfadsToolsError, FileNotFoundError):
    """A file or folder that should exist does not."""


class OverwriteError(LfadsToolsError, FileExistsError):
    """A write that would replace an existing file without ``overwrite=True``."""


class OptionalDependencyError(LfadsToolsError, ImportError):
    """A feature needs a package from an extra (``plot``, ``nwb``, ``bench``)."""


class LibraryWarning(UserWarning):
    """Base class of the library's warnings."""


class SilentUnitsWarning(LibraryWarning):
    """Recorded units that never fire: constant channels, which an LDS cannot model."""


class LikelihoodDecreaseWarning(LibraryWarning):
    """EM lowered the log-likelihood by more than round-off."""


class DefaultsUsedWarning(LibraryWarning):
    """A reader fell back to default values for missing parts."""


def warn(message: str, category: type) -> None:
    """``warnings.warn`` attributed to the first caller outside ``lds`` and ``lfads_tools``."""
    import sys
    import warnings

    frame, stacklevel = sys._getframe(1), 2  # stacklevel 2: the function that called warn()
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("lds", "lfads_tools"):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, category, stacklevel=stacklevel)


def require(module_name, extra):
    """Import an optional dependency or raise a clear error naming the extra."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{module_name} is needed for this; install it with "
            f"pip install 'lfads-tools[{extra}]'"
        ) from exc
