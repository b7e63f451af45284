"""`svp-denoiser-stage*` as an MLflow pyfunc, logged from code: one denoising step.

Inputs: `latents` (B, C, F, h, w), `timesteps` (B,), `reference_latents` (B, C, h, w), `kps`
(B, F, 3, H, W) Head-Kps images in [0, 1], `audio` (B, F, 5, steps, 384) Whisper windows, `style`
(B, d) a style-prior draw; output: the model's prediction (v), shaped as `latents`. MLflow imports
this file on load; the weights are the `save_pretrained` folder logged beside it.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch

from components.diffusion.models.denoiser import Denoiser
from components.training.registry import WEIGHTS_ARTIFACT, load_pretrained


class DenoiserModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.denoiser = load_pretrained(Denoiser, context.artifacts[WEIGHTS_ARTIFACT])

    def predict(self, context, model_input, params=None):
        def tensor(name):
            return torch.as_tensor(np.asarray(model_input[name], np.float32))

        with torch.no_grad():
            reference = self.denoiser.encode_reference(tensor("reference_latents"))
            out = self.denoiser(tensor("latents"), tensor("timesteps").long(), reference,
                                tensor("kps"), tensor("audio"), tensor("style"))
        return out.numpy()


mlflow.models.set_model(DenoiserModel())
