"""The exceptions trtdeploy raises on purpose.

Each message says what was expected, what was found and what to do, so a user can act on the
first line they read. The CLI maps each class to its own exit code.
"""

from __future__ import annotations


class TrtDeployError(Exception):
    """Base class: a failure the tool detected and explained (as opposed to a bug)."""

    exit_code = 1


class InputValidationError(TrtDeployError, ValueError):
    """A feed given to an engine does not match the engine's input specs."""

    exit_code = 2


class ArtifactError(TrtDeployError):
    """A bundle, manifest, ONNX file or weights folder is missing, malformed or tampered with."""

    exit_code = 3


class IncompatibleEngine(ArtifactError):
    """A serialized engine was built for another TensorRT version, GPU or set of options."""


class BackendUnavailable(TrtDeployError):
    """The requested backend (TensorRT, a CUDA provider, ...) is not installed or has no device."""

    exit_code = 4


class ExportError(TrtDeployError):
    """torch -> ONNX export produced a graph that does not honour the recipe's contract."""

    exit_code = 5


class StorageError(TrtDeployError):
    """Writing an artifact failed for want of disk space (or quota); nothing half-written is left."""


class UsageError(InputValidationError):
    """The command line or an API call names something that does not exist (a model, a preset, an
    option that does not apply)."""


class NumericalError(TrtDeployError):
    """An engine returned NaN or Inf; nothing is handed back as if it were an answer."""

    exit_code = 6


class VerificationError(TrtDeployError):
    """An engine missed its accuracy budget; ``report`` holds every comparison."""

    exit_code = 6

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
