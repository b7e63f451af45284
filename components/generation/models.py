"""The trained parts a video is generated with, and where they came from.

By default this is the registry's champion, `models:/svp-generator@champion` (`generate.model`,
which `svp promote` moves): one version holding the stage-3 denoiser, the VAE, the style
extractor, and the features stage's settings and expression basis, so inputs are processed as
training data was. With `generate.model` null the parts are read one by one instead, each any
`save_pretrained` folder or registry URI (`models:/svp-denoiser-stage3/4`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from components.config import DiffusionConfig, GenerateConfig
from components.diffusion.denoiser import Denoiser
from components.errors import SvpError
from components.features.expression import ExpressionBasis
from components.runtime import download_registered
from components.style.extractor import StyleExtractor
from components.training.registry import load_model_from, weights_digest


@dataclass
class Generator:
    vae: AutoencoderKL
    denoiser: Denoiser
    style_model: StyleExtractor
    basis: ExpressionBasis
    features: dict  # the features stage's config.json: fps, crop_scale, whisper checkpoint, ...
    diffusion: DiffusionConfig
    provenance: list[str]  # one line per part: what was loaded


def describe(source: str) -> str:
    """`source` and, for a folder, its weights' digest."""
    if source.startswith("models:/"):
        return source
    digest = weights_digest(source)
    return f"{source} (weights {digest})" if digest else source


def training_data(features_dir: Path, features: dict) -> str:
    """Which data the generator was trained on, from the features index."""
    index = pq.read_table(features_dir / "index.parquet").to_pandas()
    train = index[index["split"] == "train"]
    return (f"{len(train)} clips of {train['identity'].nunique()} identities "
            f"({features.get('manifest', '?')})")


def features_settings(features_dir: str | Path) -> tuple[dict, ExpressionBasis]:
    """The features stage's config.json and expression basis: inputs are processed as the
    training data was."""
    config, basis = Path(features_dir) / "config.json", Path(features_dir) / "expression_basis.npz"
    for path in (config, basis):
        if not path.is_file():
            raise SvpError(f"{path}: not found (run `dvc repro` to train the generator, or set "
                           "generate.features_dir)")
    return json.loads(config.read_text()), ExpressionBasis.load(basis)


def registered_parts(uri: str) -> dict[str, str]:
    """A registered `svp-generator` version's parts as local folders (GenerateConfig's fields)."""
    import yaml

    try:
        root = download_registered(uri)
        artifacts = yaml.safe_load((root / "MLmodel").read_text())["flavors"][
            "python_function"]["artifacts"]
    except Exception as err:
        raise SvpError(f"{uri}: cannot load this registered generator "
                       f"({' '.join(str(err).split())[:140]}); run `dvc repro` (its promote "
                       "stage sets the champion) or pass --model, or --denoiser, --vae and "
                       "--style-model") from None
    path = {key: str(root / value["path"]) for key, value in artifacts.items()}
    return {"denoiser": path["denoiser"], "vae": path["vae"], "style_model": path["style"],
            "features_dir": path["features"]}


def resolved_parts(cfg: GenerateConfig) -> GenerateConfig:
    """`cfg` naming the parts themselves: those of the registered generator `cfg.model`, if set."""
    return replace(cfg, model=None, **registered_parts(cfg.model)) if cfg.model else cfg


def load_generator(cfg: GenerateConfig, diffusion: DiffusionConfig) -> Generator:
    """The generator `cfg` names: a registered one (`cfg.model`) or its parts."""
    origin = [f"generator {cfg.model}"] if cfg.model else []
    cfg = resolved_parts(cfg)
    features_dir = Path(cfg.features_dir)
    features, basis = features_settings(features_dir)
    denoiser = load_model_from(cfg.denoiser, Denoiser)
    vae = load_model_from(cfg.vae, AutoencoderKL)
    style_model = load_model_from(cfg.style_model, StyleExtractor)
    provenance = origin + [f"denoiser {describe(cfg.denoiser)}", f"VAE {describe(cfg.vae)}",
                  f"style extractor {describe(cfg.style_model)}",
                  f"trained on {training_data(features_dir, features)}"]
    return Generator(vae.eval(), denoiser.eval(), style_model.eval(), basis, features, diffusion,
                     provenance)
