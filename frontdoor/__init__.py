"""trtdeploy: a deployment compiler for vision-language models.

The front door: `trtdeploy.cli` (the `trtdeploy` command) and `trtdeploy.build` (the flow that
chains the stages: recipe -> ONNX -> bundle -> verified engine). The stages themselves live in
the subpackages models, export, calibration and runtime.
"""

__version__ = "0.1.0"
