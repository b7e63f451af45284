"""`svp-generator` in the MLflow registry: one version holding everything `svp generate` needs
(the denoiser, VAE and style extractor folders, the features stage's settings and expression
basis, the diffusion and generate params), logged from code (`pyfunc_generator.py`), so that
`mlflow models serve` answers generation requests. Parts given as registry URIs are downloaded
first; the version's tags say which part versions it was built from."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from components.config import DiffusionConfig, GenerateConfig
from components.generation.models import describe
from components.runtime import download_registered
from components.tracking import open_stage_run

PYFUNC_GENERATOR = Path(__file__).with_name("pyfunc_generator.py")
EXPERIMENT = "svp-generator"
FEATURES_FILES = ("config.json", "expression_basis.npz", "index.parquet")
REQUIREMENTS = ["torch==2.13.0", "diffusers", "safetensors", "numpy", "pandas", "opencv-python",
                "dlib-bin", "openai-whisper", "av"]


def _local(source: str, folder: Path) -> str:
    if not source.startswith("models:/"):
        return source
    root = download_registered(source, str(folder))
    (config,) = (root / "artifacts").glob("*/config.json")
    return str(config.parent)


def register_generator(cfg: GenerateConfig, diffusion: DiffusionConfig,
                       name: str = "svp-generator", root: str | Path = ".",
                       stage: str = "register_generator") -> str:
    """Log and register the generator `cfg` names (in a run of `stage`); returns the new
    version."""
    import mlflow

    parts = {"denoiser": cfg.denoiser, "vae": cfg.vae, "style": cfg.style_model}
    tags = {f"svp.part.{k}": describe(v) for k, v in parts.items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        artifacts = {k: _local(v, folder / k) for k, v in parts.items()}
        features = folder / "features"
        features.mkdir()
        for file in FEATURES_FILES:
            shutil.copy2(Path(cfg.features_dir) / file, features / file)
        artifacts["features"] = str(features)
        settings = folder / "generator.json"
        settings.write_text(json.dumps({"diffusion": asdict(diffusion),
                                        "generate": asdict(cfg)}, indent=1))
        artifacts["generator"] = str(settings)
        run = open_stage_run(EXPERIMENT, stage, asdict(cfg), tags, root)
        with run.active():
            info = mlflow.pyfunc.log_model(
                name="svp_generator", python_model=str(PYFUNC_GENERATOR), artifacts=artifacts,
                registered_model_name=name, pip_requirements=REQUIREMENTS)
        run.finish()
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient(run.uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version
