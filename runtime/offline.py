"""No network, ever: the libraries' telemetry and hub access turned off before they can act.

Importing onnxruntime alone starts its telemetry (1DS): a device id and an event database under
~/.cache/Microsoft, and an uploader that resolves a telemetry host. Its API call
disable_telemetry_events() comes too late for the events already made at import; the switch that
stops all of it is ORT_DISABLE_TELEMETRY=1 in the environment before onnxruntime initialises
(onnxruntime's Privacy.md). transformers and huggingface_hub stay off the network and send no
telemetry with HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_HUB_DISABLE_TELEMETRY. trtdeploy sets
these on import of its runtime and its front door, overriding what the environment says: a
deployment tool that promises no network does not let a variable undo that.
"""

from __future__ import annotations

import os
import sys
import warnings

OFFLINE_ENVIRONMENT = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime: no 1DS uploader, events or device id
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: no requests at all
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
}


def go_offline() -> None:
    """Set OFFLINE_ENVIRONMENT; if onnxruntime was imported before trtdeploy, also turn off its
    events through the API (what it made at its own import is beyond reach: import trtdeploy first)."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        disable = getattr(ort, "disable_telemetry_events", None)
        if disable is not None:
            disable()
        warnings.warn(
            "onnxruntime was imported before trtdeploy, so its telemetry started before trtdeploy could turn "
            "it off; import trtdeploy first, or set ORT_DISABLE_TELEMETRY=1 in the environment.",
            stacklevel=3,
        )
