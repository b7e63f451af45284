"""The style extractor in the MLflow model registry.

Logged as a pyfunc (so `mlflow models` tooling and signatures work) whose artifacts are plain
files: `weights` (safetensors) and `config` (JSON). `load_style_extractor` reads those two files
back and never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import torch
from safetensors.torch import load_file

from components.style.extractor import (
    AUDIO_STEPS,
    AUDIO_WIDTH,
    N_AUDIO_STATES,
    StyleExtractor,
    StyleExtractorConfig,
)


class StyleExtractorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: {expression, audio, valid} arrays in, [mean | logvar] out."""

    def load_context(self, context) -> None:
        self.model = build(context.artifacts["config"], context.artifacts["weights"])

    def predict(self, context, model_input, params=None):
        n = len(model_input["expression"])
        with torch.no_grad():
            mean, logvar = self.model(
                torch.as_tensor(np.asarray(model_input["expression"], np.float32)),
                torch.as_tensor(np.asarray(model_input["audio"], np.float32)),
                torch.as_tensor(np.asarray(model_input["valid"], bool)),
                torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))
        return torch.cat([mean, logvar], dim=1).numpy()


def build(config_path: str | Path, weights_path: str | Path) -> StyleExtractor:
    cfg = StyleExtractorConfig(**json.loads(Path(config_path).read_text()))
    model = StyleExtractor(cfg)
    model.load_state_dict(load_file(str(weights_path)))
    return model.eval()


def signature(cfg: StyleExtractorConfig):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    audio_dim = N_AUDIO_STATES * AUDIO_STEPS * AUDIO_WIDTH
    return ModelSignature(
        inputs=Schema([
            TensorSpec(np.dtype(np.float32), (-1, -1, cfg.expression_dim), "expression"),
            TensorSpec(np.dtype(np.float32), (-1, -1, audio_dim), "audio"),
            TensorSpec(np.dtype(bool), (-1, -1), "valid"),
        ]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2 * cfg.d_model), "style")]),
    )


def write_model_files(model: StyleExtractor, folder: Path) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights, config = folder / "model.safetensors", folder / "config.json"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    config.write_text(json.dumps(asdict(model.cfg), indent=2) + "\n")
    return weights, config


def log_and_register(model: StyleExtractor, folder: Path, name: str) -> str:
    """Log the model in the active MLflow run and register it; returns the new version."""
    weights, config = write_model_files(model, folder)
    info = mlflow.pyfunc.log_model(
        name="style_extractor", python_model=StyleExtractorModel(),
        artifacts={"weights": str(weights), "config": str(config)},
        signature=signature(model.cfg), registered_model_name=name,
        pip_requirements=["torch==2.13.0", "safetensors", "numpy"])
    return str(info.registered_model_version)


def load_style_extractor(model_uri: str) -> StyleExtractor:
    """`models:/svp-style-extractor/<version>` or `@<alias>`, from the artifacts' plain files."""
    root = Path(mlflow.artifacts.download_artifacts(f"{model_uri}"))
    artifacts = root / "artifacts"
    return build(artifacts / "config.json", artifacts / "model.safetensors")
