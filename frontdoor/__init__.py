"""trtdeploy: a deployment compiler for vision-language models.

The front door: `trtdeploy.cli` (the `trtdeploy` command) and `trtdeploy.build` (the flow that
chains the stages: recipe -> ONNX -> bundle -> verified engine). The stages themselves live in
the subpackages models, export, calibration and runtime.

Importing any of it first turns the libraries' telemetry and hub access off (runtime/offline.py):
no network, ever.
"""

from trtdeploy.runtime.offline import go_offline

go_offline()

__version__ = "0.1.0"
