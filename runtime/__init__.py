"""The thin runtime: load a bundle, check it, run it, verify it, benchmark it.

Imports numpy, PIL, `tokenizers` and a backend (onnxruntime, tensorrt) only: no torch,
transformers or onnx, so it deploys on a device with nothing else installed.
"""

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import (
    ArtifactError,
    BackendUnavailable,
    IncompatibleEngine,
    InputValidationError,
    TrtDeployError,
    VerificationError,
)
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec
from trtdeploy.runtime.targets import DEFAULT_TARGET, TARGETS, open_engine, open_engines

__all__ = [
    "DEFAULT_TARGET",
    "TARGETS",
    "ArtifactError",
    "BackendUnavailable",
    "Bundle",
    "DimRange",
    "Engine",
    "IOSpec",
    "IncompatibleEngine",
    "InputValidationError",
    "Manifest",
    "TensorSpec",
    "TrtDeployError",
    "VerificationError",
    "open_engine",
    "open_engines",
]
