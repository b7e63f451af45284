"""`svp assemble` (DVC stage `assemble`): the trained parts saved as one generator folder, the
object `svp evaluate` measures, `svp promote` registers and `svp generate` and the served model
load. Sampling settings and the scheduler come from `diffusion` once, here; afterwards the folder
samples as it was saved.

    <out_dir>/model_index.json    parts, steps, guidance, window, overlap, and each part's source
                                  and weights digest (computed once, here)
    <out_dir>/scheduler/          Euler, built from the training noise schedule
    <out_dir>/vae/ denoiser/ style_extractor/ input_settings/    save_pretrained folders
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.utils.logging import disable_progress_bar

from components.config import DiffusionConfig, GeneratorConfig
from components.diffusion.models.denoiser import Denoiser
from components.errors import SvpError
from components.generation.input_settings import InputSettings
from components.generation.pipeline import TalkingHeadPipeline, new_pipeline
from components.generation.style_presets import StylePresets
from components.style.extractor import StyleExtractor
from components.tracking import log_stage
from components.training.registry import load_model_from, local_model_folder, weights_digest

log = logging.getLogger(__name__)
EXPERIMENT = "svp-generator"


def _part(source: str) -> dict:
    """Where a part came from: its source and its weights' digest (how `promote` finds the
    part's registered version)."""
    folder = local_model_folder(source)
    return {"source": source, "weights": weights_digest(folder)}


def assemble(cfg: GeneratorConfig, diffusion: DiffusionConfig) -> TalkingHeadPipeline:
    denoiser = load_model_from(cfg.denoiser, Denoiser)
    if denoiser.max_frames is None:
        raise SvpError(f"{cfg.denoiser}: a stage-1 denoiser (no motion modules) cannot make "
                       "videos; assemble a stage-2 or stage-3 one")
    extractor = load_model_from(cfg.style_model, StyleExtractor)
    pipeline = new_pipeline(load_model_from(cfg.vae, AutoencoderKL), denoiser, diffusion,
                            extractor, InputSettings.from_features(cfg.features_dir),
                            {name: _part(getattr(cfg, name))
                             for name in ("denoiser", "vae", "style_model")},
                            StylePresets.from_training_clips(extractor, cfg.features_dir))
    save_generator(pipeline, cfg.out_dir)
    log_stage(EXPERIMENT, "assemble", asdict(cfg) | {"sampling": asdict(diffusion.sampling)},
              {}, [Path(cfg.out_dir) / "model_index.json"],
              {f"svp.part.{name}.weights": str(part["weights"])
               for name, part in pipeline.config.parts.items()})
    log.info("assembled %s: %d steps, guidance %g, windows of %d (overlap %d)", cfg.out_dir,
             diffusion.sampling.steps, diffusion.sampling.guidance, diffusion.sampling.window,
             diffusion.sampling.overlap)
    return pipeline


def save_generator(pipeline: TalkingHeadPipeline, folder: str | Path) -> Path:
    """`pipeline.save_pretrained(folder)`, complete or absent: written beside it, renamed."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_generator(source: str | Path) -> TalkingHeadPipeline:
    """A generator folder, or a registered `svp-generator` version (`models:/…`)."""
    from components.registry.generator import generator_folder

    folder = generator_folder(str(source)) if str(source).startswith("models:/") else Path(source)
    if not (folder / "model_index.json").is_file():
        raise SvpError(f"{source}: no generator here (expected model_index.json; make one with "
                       "`svp assemble` or `dvc repro`)")
    disable_progress_bar()  # the loading bar; the denoising steps keep the project's own
    try:
        pipeline = TalkingHeadPipeline.from_pretrained(str(folder), low_cpu_mem_usage=False,
                                                       use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise SvpError(f"{folder}: cannot load this generator "
                       f"({' '.join(str(err).split())[:160]})") from None
    pipeline.source = str(source)
    return pipeline
