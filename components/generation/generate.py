"""`svp generate` as a plain function: a portrait, a speech recording and a style in; an mp4
with the speech muxed in out (frame count = speech duration x fps). The generator is one saved
`TalkingHeadPipeline`; it samples with one of its saved samplers ("paper": the paper's 25 Euler
steps with guidance; "fast": a few multistep-solver steps, guidance on the first few) as it was
saved, unless the request overrides steps or guidance explicitly; the log and the mp4's metadata
say which sampler ran and every override."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.config import GenerateConfig
from components.errors import SvpError
from components.features import audio as whisper_features
from components.features.head_kps import head_kps
from components.features.landmarks import DlibLandmarks
from components.generation.head_motion import derived_kps, retargeted_kps
from components.generation.inputs import read_portrait, read_speech, read_video_landmarks
from components.generation.pipeline import (
    QUALITIES,
    GenerationInputs,
    Sampling,
    TalkingHeadPipeline,
)
from components.generation.style import Style, load_style, mix, style_from_video
from components.generation.video_out import write_mp4
from components.precision import use_bf16
from components.synth.speech import frame_features

log = logging.getLogger(__name__)
MAX_SEED = 2**63 - 1
Report = Callable[[str, float], None]  # (what is being done, fraction of the work done)


def no_report(what: str, done: float) -> None:
    pass


@dataclass(frozen=True)
class Request:
    image: str
    audio: str
    out: str
    style_videos: tuple[str, ...] = ()
    style_files: tuple[str, ...] = ()
    style_presets: tuple[str, ...] = ()  # names of the generator's presets (one per emotion)
    style_mix: float | None = None  # with two styles: 0 is the first, 1 the second
    style_mean: bool = False  # the prior's mean instead of a draw
    pose_video: str | None = None
    seed: int = 0
    steps: int | None = None  # None: the generator's own
    guidance: float | None = None  # None: the generator's own
    quality: str | None = None  # "paper" | "fast"; None: `generate.quality`

    def check(self) -> None:
        """Refuse nonsense before anything is loaded: one line each."""
        Sampling(1 if self.steps is None else self.steps,
                 0.0 if self.guidance is None else float(self.guidance))
        if self.quality is not None and self.quality not in QUALITIES:
            raise SvpError(f"--quality must be one of {', '.join(QUALITIES)}, got "
                           f"{self.quality!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or \
                not 0 <= self.seed <= MAX_SEED:
            raise SvpError(f"seed must be a whole number in [0, {MAX_SEED}], got {self.seed!r}")
        if self.style_mix is not None and not (math.isfinite(self.style_mix)
                                               and 0 <= self.style_mix <= 1):
            raise SvpError(f"--style-mix must lie in [0, 1], got {self.style_mix}")
        n_styles = len(self.style_videos) + len(self.style_files) + len(self.style_presets)
        if n_styles > 2:
            raise SvpError(f"at most two styles (to mix with --style-mix), got {n_styles}")
        if n_styles == 2 and self.style_mix is None:
            raise SvpError("two styles need --style-mix (0: the first, 1: the second)")
        if n_styles < 2 and self.style_mix is not None:
            raise SvpError("--style-mix needs two styles")
        for path, what in [(self.image, "image"), (self.audio, "audio"),
                           *((v, "style video") for v in self.style_videos),
                           *((f, "style file") for f in self.style_files),
                           *([(self.pose_video, "pose video")] if self.pose_video else [])]:
            if not Path(path).is_file():
                raise SvpError(f"{path}: {what} not found")
        out = Path(self.out)
        if out.is_dir():
            raise SvpError(f"{out}: is a folder; --out names the mp4 file to write")
        if not out.parent.is_dir():
            raise SvpError(f"{out.parent}: no such folder to write {out.name} in")
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise SvpError(f"{out.parent}: this folder cannot be written to")
        if out.suffix.lower() != ".mp4":
            raise SvpError(f"{out}: the output is an H.264 mp4; name it *.mp4")


def preset_style(pipeline: TalkingHeadPipeline, name: str) -> Style:
    if pipeline.style_presets is None:
        raise SvpError("this generator has no style presets (it was assembled before they "
                       "existed): run `svp assemble` again, or give a style video")
    return pipeline.style_presets.style(name)


def choose_style(request: Request, pipeline: TalkingHeadPipeline,
                 detector: DlibLandmarks) -> Style | None:
    """Style videos, then style files, then presets: the first two are mixed."""
    s = pipeline.input_settings.config
    styles = [style_from_video(v, pipeline.style_extractor, pipeline.input_settings.basis,
                               detector, s.fps, s.whisper_checkpoint, s.min_audio_dbfs)
              for v in request.style_videos] + [load_style(p) for p in request.style_files] \
        + [preset_style(pipeline, name) for name in request.style_presets]
    if len(styles) == 2:  # the counts and the mix were checked by `Request.check`
        return mix(styles[0], styles[1], request.style_mix)
    return styles[0] if styles else None


def prepare_inputs(pipeline: TalkingHeadPipeline, request: Request,
                   settings: GenerateConfig, report: Report = no_report) -> GenerationInputs:
    """The request's portrait, speech, head motion and style as the pipeline's inputs."""
    s = pipeline.input_settings.config
    detector = DlibLandmarks(s.dlib_predictor)
    report("reading the speech", 0.01)
    speech = read_speech(request.audio, s.fps, s.whisper_checkpoint, s.min_audio_dbfs,
                         settings.max_audio_s)
    report("finding the face", 0.04)
    portrait = read_portrait(request.image, detector, s.crop_scale,
                             pipeline.config.resolution)
    reference_kps = head_kps(portrait.landmarks)
    n = speech.n_frames
    if request.pose_video:
        pose, _ = read_video_landmarks(request.pose_video, detector, s.fps, "pose video")
        pose = head_kps(pose)
        pose = pose[np.arange(n) % len(pose)]  # a shorter pose video loops
        kps = retargeted_kps(reference_kps, pose)
    else:
        loudness, _ = frame_features(speech.samples, whisper_features.SAMPLE_RATE, s.fps, n)
        kps = derived_kps(reference_kps, n, s.fps, loudness, request.seed, settings.head_motion)
    report("reading the style", 0.07)
    style = choose_style(request, pipeline, detector)
    if style is None:
        log.info("no style given: the style attention is off")
    else:
        log.info("style: %s (%s)", style.source, "mean" if request.style_mean else
                 f"a draw, seed {request.seed}")
    audio = whisper_features.relative_to_silence(speech.features, s.whisper_checkpoint, s.fps)
    return GenerationInputs(portrait.crop, kps, audio,
                            None if style is None else style.draw(request.seed,
                                                                  request.style_mean))


def provenance(pipeline: TalkingHeadPipeline) -> list[str]:
    """One line per part of the generator: where it came from, its weights' digest."""
    lines = [f"generator {pipeline.source or pipeline.name_or_path}"]
    lines += [f"{name} {part['source']} (weights {part['weights']})"
              for name, part in pipeline.config.parts.items()]
    return lines + [f"trained on {pipeline.input_settings.config.training_data}"]


def quality(pipeline: TalkingHeadPipeline, asked: str | None, settings: GenerateConfig) -> str:
    """The sampler `asked` for, else `settings.quality`; a generator without the fast sampler
    (assembled before it existed) falls back to the paper's unless it was asked for."""
    if asked is not None:
        return asked
    if settings.quality not in pipeline.qualities:
        log.warning("this generator has no %s sampler: sampling with the paper's",
                    settings.quality)
        return "paper"
    return settings.quality


def sampling_note(pipeline: TalkingHeadPipeline, request: Request, chosen: str) -> str:
    """Which sampler ran, and which of its settings the request overrode."""
    used = pipeline.sampling(chosen, request.steps, request.guidance)
    saved = pipeline.sampling(chosen)
    note = f"{chosen} sampler: {used.describe()}"
    overrides = [f"{name} {getattr(saved, name):g} -> {getattr(used, name):g}"
                 for name in ("steps", "guidance") if getattr(request, name) is not None
                 and getattr(used, name) != getattr(saved, name)]
    return note + (f" (overriding the generator's: {', '.join(overrides)})" if overrides
                   else " (the generator's own)")


def generate(pipeline: TalkingHeadPipeline, request: Request,
             settings: GenerateConfig | None = None, report: Report = no_report) -> dict:
    """Make `request.out`; returns what was made (frames, seconds, the models used, the face
    crop the generator saw). `report(what, fraction done)` hears each phase and step."""
    request.check()
    settings = settings or GenerateConfig()
    if pipeline.denoiser.max_frames is None:
        raise SvpError("this generator's denoiser has no motion modules (a stage-1 model): "
                       "generate with a stage-2 or stage-3 one")
    models = provenance(pipeline)
    for line in models:
        log.info("model: %s", line)
    chosen = quality(pipeline, request.quality, settings)
    sampling = pipeline.sampling(chosen, request.steps, request.guidance)
    pipeline.bf16 = use_bf16(settings.bf16, pipeline.device, "generate")
    note = sampling_note(pipeline, request, chosen) + ("; bf16 autocast" if pipeline.bf16 else "")
    log.info("sampling: %s", note)
    inputs = prepare_inputs(pipeline, request, settings, report)
    fps = pipeline.input_settings.config.fps

    def step_done(step: int, steps: int) -> None:
        report(f"denoising: step {step} of {steps}", 0.1 + 0.8 * step / steps)

    report("denoising", 0.1)
    frames = pipeline(inputs, seed=request.seed, sampling=sampling,
                      window_batch=settings.window_batch, decode_batch=settings.decode_batch,
                      on_step=step_done)
    source = pipeline.source or pipeline.name_or_path
    written = write_mp4(_reported(frames, report), request.out, fps, request.audio,
                        settings.crf, comment=f"svp {source}; seed {request.seed}; {note}")
    log.info("%s: %d frames, %.2f s", request.out, written, written / fps)
    return {"out": str(Path(request.out)), "frames": written, "seconds": written / fps,
            "models": models, "sampling": note, "crop": inputs.reference}


def _reported(frames: Iterator[np.ndarray], report: Report) -> Iterator[np.ndarray]:
    """The frames, saying once that decoding and encoding began (after the last step)."""
    for i, frame in enumerate(frames):
        if i == 0:
            report("decoding and encoding the video", 0.92)
        yield frame
