"""The style extractor in the MLflow model registry (`svp-style-extractor`).

Registered as a models-from-code pyfunc (`pyfunc_model.py`) over the `save_pretrained` folder;
`load_style_extractor` returns the torch model. Neither side unpickles anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.style.extractor import AUDIO_STEPS, AUDIO_WIDTH, N_AUDIO_STATES, StyleExtractor
from components.tracking import StageRun
from components.training.registry import load_registered, register_model

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
REQUIREMENTS = ["torch==2.13.0", "diffusers", "safetensors", "numpy"]


def signature(model: StyleExtractor):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    audio_dim = N_AUDIO_STATES * AUDIO_STEPS * AUDIO_WIDTH
    return ModelSignature(
        inputs=Schema([
            TensorSpec(np.dtype(np.float32), (-1, -1, model.config.expression_dim),
                       "expression"),
            TensorSpec(np.dtype(np.float32), (-1, -1, audio_dim), "audio"),
            TensorSpec(np.dtype(bool), (-1, -1), "valid"),
        ]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2 * model.config.d_model),
                                   "style")]),
    )


def register_style_extractor(run: StageRun, model: StyleExtractor, folder: Path,
                             name: str) -> str:
    """Log the saved model folder under `run` and register it; returns the new version."""
    return register_model(run, folder, name, PYFUNC_CODE, signature(model), REQUIREMENTS)


def load_style_extractor(model_uri: str) -> StyleExtractor:
    """`models:/svp-style-extractor/<version>` or `@<alias>`."""
    return load_registered(model_uri, StyleExtractor)
