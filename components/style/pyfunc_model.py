"""The style extractor as an MLflow pyfunc, logged from code (`mlflow.models.set_model`).

MLflow imports this file when the registered model loads, so nothing is unpickled; the weights
are the `save_pretrained` folder logged beside it. Input: `expression` (B, T, E), `audio`
(B, T, 3840), `valid` (B, T); output: [mean | log-variance] (B, 2d).
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch

from components.style.extractor import StyleExtractor
from components.training.registry import WEIGHTS_ARTIFACT, load_pretrained


class StyleExtractorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = load_pretrained(StyleExtractor, context.artifacts[WEIGHTS_ARTIFACT])

    def predict(self, context, model_input, params=None):
        n = len(model_input["expression"])
        present = torch.ones(n, dtype=torch.bool)
        with torch.no_grad():
            mean, logvar = self.model(
                torch.as_tensor(np.asarray(model_input["expression"], np.float32)),
                torch.as_tensor(np.asarray(model_input["audio"], np.float32)),
                torch.as_tensor(np.asarray(model_input["valid"], bool)), present, present)
        return torch.cat([mean, logvar], dim=1).numpy()


mlflow.models.set_model(StyleExtractorModel())
