"""Every row's frames for one case, made by the generation pipeline `svp generate` uses."""

from __future__ import annotations

import numpy as np

from components.diffusion.frames import Clip, Sample
from components.generation.pipeline import GenerationInputs, TalkingHeadPipeline
from components.generation.style import Style


def window(clip: Clip, case: Sample, frames: int) -> np.ndarray:
    return np.clip(np.arange(case.start, case.start + frames), 0, len(clip) - 1)


def real_frames(clips: list[Clip], case: Sample, frames: int) -> np.ndarray:
    """(F, R, R, 3) uint8: the target's window."""
    return clips[case.target].frames(window(clips[case.target], case, frames))


def case_rows(pipeline: TalkingHeadPipeline, clips: list[Clip], case: Sample, frames: int,
              style: Style, seed: int) -> dict[str, np.ndarray]:
    """Row name -> (F, R, R, 3) uint8 frames. Every generated row starts from the same noise."""
    target, reference = clips[case.target], clips[case.reference].frames(0)[0]
    idx = window(target, case, frames)
    speech = clips[case.other_speech]

    def generate(audio: np.ndarray, drawn: np.ndarray | None, style_scale: float = 1.0):
        inputs = GenerationInputs(reference, target.kps[idx], audio, drawn)
        return np.stack(list(pipeline(inputs, seed=seed, style_scale=style_scale)))

    own_audio = target.audio[idx]
    drawn = style.draw(seed)
    return {"full": generate(own_audio, drawn),
            "no_style": generate(own_audio, drawn, style_scale=0.0),
            "mean_style": generate(own_audio, style.draw(seed, use_mean=True)),
            "other_speech": generate(speech.audio[np.clip(idx, 0, len(speech) - 1)], drawn),
            "reference_repeated": np.repeat(reference[None], frames, axis=0)}
