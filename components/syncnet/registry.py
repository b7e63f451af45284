"""The SyncNet in the MLflow model registry (`svp-syncnet`), as the style extractor is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.syncnet.model import SyncNet
from components.tracking import StageRun
from components.training.registry import load_model_from, register_model

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
REQUIREMENTS = ["torch==2.13.0", "diffusers", "safetensors", "numpy", "scipy", "opencv-python",
                "python_speech_features"]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "frames"),
                       TensorSpec(np.dtype(np.float32), (-1,), "speech")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (3,), "offset_sync_c_sync_d")]))


def register_syncnet(run: StageRun, folder: Path, name: str) -> str:
    """Log the saved SyncNet folder under `run` and register it; returns the new version."""
    return register_model(run, folder, name, PYFUNC_CODE, signature(), REQUIREMENTS)


def load_syncnet(source: str | Path) -> SyncNet:
    """A `save_pretrained` folder or `models:/svp-syncnet/<version>` (or `@<alias>`)."""
    return load_model_from(source, SyncNet)
