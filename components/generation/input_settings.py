"""How a generator turns a portrait, speech and a style video into its conditions, as its training
data was made: the features stage's settings (frame rate, crop scale, Whisper checkpoint, the
loudness floor, the landmark predictor) and its expression basis, with a line saying which data
the generator was trained on. A small model part saved with the generator (config + safetensors),
so a generator folder needs no features folder beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from components.errors import SvpError
from components.features.expression import ExpressionBasis

BASIS_ARRAYS = ("mean_shape", "pose_effect", "components", "scales")


class InputSettings(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, fps: float = 25.0, crop_scale: float = 1.6, min_audio_dbfs: float = -45.0,
                 whisper_checkpoint: str | None = None, dlib_predictor: str = "",
                 n_expression: int = 16, basis_identities: tuple[str, ...] = (),
                 training_data: str = ""):
        super().__init__()
        shapes = {"mean_shape": (68, 2), "pose_effect": (3, 136),
                  "components": (n_expression, 136), "scales": (n_expression,)}
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(shape, dtype=torch.float64))

    @classmethod
    def from_features(cls, features_dir: str | Path) -> InputSettings:
        """The settings of the features stage that wrote `features_dir`."""
        folder = Path(features_dir)
        paths = [folder / n for n in ("config.json", "expression_basis.npz", "index.parquet")]
        for path in paths:
            if not path.is_file():
                raise SvpError(f"{path}: not found (run the features stage, or set "
                               "generator.features_dir)")
        features = json.loads(paths[0].read_text())
        basis = ExpressionBasis.load(paths[1])
        index = pq.read_table(paths[2]).to_pandas()
        train = index[index["split"] == "train"]
        settings = cls(fps=float(features["fps"]), crop_scale=float(features["crop_scale"]),
                       min_audio_dbfs=float(features["min_audio_dbfs"]),
                       whisper_checkpoint=features["whisper_checkpoint"],
                       dlib_predictor=features["dlib_predictor"],
                       n_expression=len(basis.components),
                       basis_identities=tuple(str(i) for i in basis.identities),
                       training_data=f"{len(train)} clips of {train['identity'].nunique()} "
                                     f"identities ({features.get('manifest', '?')})")
        for name in BASIS_ARRAYS:
            getattr(settings, name).copy_(torch.from_numpy(getattr(basis, name)))
        return settings

    @property
    def basis(self) -> ExpressionBasis:
        arrays = {name: getattr(self, name).numpy() for name in BASIS_ARRAYS}
        return ExpressionBasis(**arrays, identities=np.array(self.config.basis_identities))
