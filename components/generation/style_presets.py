"""One style per emotion of the training data, saved with the generator: what `svp demo` and
`svp generate --style-preset` offer without a style reference video or a dataset.

A preset is the average of the training clips' priors of that emotion (each clip's prior from
the generator's own style extractor): the mean of their means and the root of their mean
variance. Made once, when `assemble` writes the generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from components.diffusion.style_prior import style_priors
from components.errors import SvpError
from components.generation.style import Style
from components.style.extractor import StyleExtractor


class StylePresets(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, names: tuple[str, ...] = (), style_dim: int = 0,
                 clips: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(len(names), style_dim))
        self.register_buffer("std", torch.ones(len(names), style_dim))

    @classmethod
    def from_training_clips(cls, extractor: StyleExtractor, features_dir: str | Path
                            ) -> StylePresets:
        index = pq.read_table(Path(features_dir) / "index.parquet").to_pandas()
        train = index[(index["split"] == "train") & index["emotion"].notna()]
        if train.empty:
            raise SvpError(f"{features_dir}: no training clip with an emotion to make style "
                           "presets from")
        priors = style_priors(extractor, str(features_dir), train["sample_id"].tolist(),
                              extractor.config.d_model)
        names = sorted(train["emotion"].unique())
        presets = cls(tuple(names), extractor.config.d_model,
                      tuple(int((train["emotion"] == n).sum()) for n in names))
        for i, name in enumerate(names):
            these = priors[(train["emotion"] == name).to_numpy()]
            presets.mean[i] = torch.from_numpy(these[:, 0].mean(0))
            presets.std[i] = torch.from_numpy(np.sqrt(np.exp(these[:, 1]).mean(0)))
        return presets

    @property
    def names(self) -> list[str]:
        return list(self.config.names)

    def style(self, name: str) -> Style:
        if name not in self.config.names:
            raise SvpError(f"no style preset {name!r} in this generator (it has: "
                           f"{', '.join(self.config.names) or 'none'})")
        i = self.config.names.index(name)
        return Style(self.mean[i].numpy().astype(np.float32),
                     self.std[i].numpy().astype(np.float32), f"preset {name}")
