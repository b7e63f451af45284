"""The SyncNet as an MLflow pyfunc, logged from code (`mlflow.models.set_model`).

MLflow imports this file when the registered model loads, so nothing is unpickled; the weights
are the `save_pretrained` folder logged beside it. Input: `frames` (T, H, W, 3) uint8 RGB face
crops and `speech` (N,) float32 at 16 kHz, in sync; output: [offset, Sync-C, Sync-D].
"""

from __future__ import annotations

import mlflow
import numpy as np

from components.syncnet.model import SyncNet
from components.syncnet.score import SAMPLE_RATE, sync_score
from components.training.registry import WEIGHTS_ARTIFACT, load_pretrained


class SyncNetModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = load_pretrained(SyncNet, context.artifacts[WEIGHTS_ARTIFACT])

    def predict(self, context, model_input, params=None):
        score = sync_score(self.model, np.asarray(model_input["frames"], np.uint8),
                           np.asarray(model_input["speech"], np.float32), SAMPLE_RATE)
        return np.array([score.offset, score.confidence, score.distance], np.float32)


mlflow.models.set_model(SyncNetModel())
