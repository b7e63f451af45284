"""`svp-vae` as an MLflow pyfunc, logged from code: uint8 images (N, H, W, 3) in, scaled
latents (N, C, h, w) out. MLflow imports this file on load; the weights are the
`save_pretrained` folder logged beside it."""

from __future__ import annotations

import mlflow
import numpy as np
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from components.diffusion.models.vae import encode
from components.training.registry import WEIGHTS_ARTIFACT, load_pretrained


class VaeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.vae = load_pretrained(AutoencoderKL, context.artifacts[WEIGHTS_ARTIFACT])

    def predict(self, context, model_input, params=None):
        images = np.asarray(model_input["images"], np.uint8)
        return encode(self.vae, images).numpy()


mlflow.models.set_model(VaeModel())
