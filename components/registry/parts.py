"""The generator's parts in the MLflow registry: `svp-vae` and `svp-denoiser-stage{1,2,3}`.

Each is a models-from-code pyfunc (`pyfunc_models.py`) over its `save_pretrained` folder, like
`svp-style-extractor`: nothing is pickled when it is logged or unpickled when it loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.tracking import StageRun
from components.training.registry import register_model

PYFUNC_VAE = Path(__file__).with_name("pyfunc_vae.py")
PYFUNC_DENOISER = Path(__file__).with_name("pyfunc_denoiser.py")
REQUIREMENTS = ["torch==2.13.0", "diffusers", "safetensors", "numpy"]


def _signature(inputs: dict[str, tuple], output: tuple):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    f32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8) if name == "images" else f32, shape, name)
                       for name, shape in inputs.items()]),
        outputs=Schema([TensorSpec(f32, output)]))


def register_vae(run: StageRun, folder: Path, name: str) -> str:
    """Input `images` uint8 (N, H, W, 3); output their scaled latents (N, C, h, w)."""
    signature = _signature({"images": (-1, -1, -1, 3)}, (-1, -1, -1, -1))
    return register_model(run, folder, name, PYFUNC_VAE, signature, REQUIREMENTS)


def register_denoiser(run: StageRun, folder: Path, name: str) -> str:
    """One denoising step: see `pyfunc_denoiser.py` for the inputs."""
    signature = _signature({
        "latents": (-1, -1, -1, -1, -1), "timesteps": (-1,),
        "reference_latents": (-1, -1, -1, -1), "kps": (-1, -1, 3, -1, -1),
        "audio": (-1, -1, -1, -1, -1), "style": (-1, -1)}, (-1, -1, -1, -1, -1))
    return register_model(run, folder, name, PYFUNC_DENOISER, signature, REQUIREMENTS)
