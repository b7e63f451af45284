"""`svp style extract`: a style reference video's prior, written to a file for `--style`."""

from __future__ import annotations

from components.features.landmarks import DlibLandmarks
from components.generation.assemble import load_generator
from components.generation.style import Style, save_style, style_from_video


def extract_style(model: str, video: str, out: str) -> Style:
    """With the style extractor and input settings of the generator `model` (a generator folder
    or registered version), as `svp generate` with that generator would."""
    pipeline = load_generator(model)
    s = pipeline.input_settings.config
    style = style_from_video(video, pipeline.style_extractor, pipeline.input_settings.basis,
                             DlibLandmarks(s.dlib_predictor), s.fps, s.whisper_checkpoint,
                             s.min_audio_dbfs)
    save_style(style, out, f"{model} (style extractor weights "
                           f"{pipeline.config.parts.get('style_model', {}).get('weights')})")
    return style
