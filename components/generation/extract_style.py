"""`svp style extract`: a style reference video's prior, written to a file for `--style`."""

from __future__ import annotations

from components.config import GenerateConfig
from components.features.landmarks import DlibLandmarks
from components.generation.models import describe, features_settings, resolved_parts
from components.generation.style import Style, save_style, style_from_video
from components.style.extractor import StyleExtractor
from components.training.registry import load_model_from


def extract_style(cfg: GenerateConfig, video: str, out: str,
                  style_model: str | None = None) -> Style:
    """With no `style_model`, the extractor and features settings of the generator `svp
    generate` would use (the registered one, `cfg.model`, if set)."""
    if not style_model:
        cfg = resolved_parts(cfg)
    source = style_model or cfg.style_model
    f, basis = features_settings(cfg.features_dir)
    model = load_model_from(source, StyleExtractor).eval()
    style = style_from_video(video, model, basis, DlibLandmarks(f["dlib_predictor"]), f["fps"],
                             f["whisper_checkpoint"], f["min_audio_dbfs"])
    save_style(style, out, describe(source))
    return style
