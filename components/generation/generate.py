"""`svp generate` as a plain function: a portrait, a speech recording and a style in; an mp4
with the speech muxed in out (frame count = speech duration x fps)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from components.config import Params
from components.errors import SvpError
from components.features import audio as whisper_features
from components.features.head_kps import head_kps
from components.features.landmarks import DlibLandmarks
from components.generation.head_motion import derived_kps, retargeted_kps
from components.generation.inputs import read_portrait, read_speech, read_video_landmarks
from components.generation.models import Generator, load_generator
from components.generation.pipeline import GenerationInputs, TalkingHeadPipeline
from components.generation.style import Style, load_style, mix, style_from_video
from components.generation.video_out import write_mp4
from components.synth.speech import frame_features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    image: str
    audio: str
    out: str
    style_videos: tuple[str, ...] = ()
    style_files: tuple[str, ...] = ()
    style_mix: float | None = None  # with two styles: 0 is the first, 1 the second
    style_mean: bool = False  # the prior's mean instead of a draw
    pose_video: str | None = None
    seed: int = 0
    steps: int | None = None  # default diffusion.sampling.steps
    guidance: float | None = None  # default diffusion.sampling.guidance


def choose_style(request: Request, gen: Generator, detector: DlibLandmarks) -> Style | None:
    f = gen.features
    styles = [style_from_video(v, gen.style_model, gen.basis, detector, f["fps"],
                               f["whisper_checkpoint"], f["min_audio_dbfs"])
              for v in request.style_videos] + [load_style(p) for p in request.style_files]
    if len(styles) > 2:
        raise SvpError("at most two styles (to mix with --style-mix)")
    if len(styles) == 2:
        if request.style_mix is None:
            raise SvpError("two styles need --style-mix (0: the first, 1: the second)")
        return mix(styles[0], styles[1], request.style_mix)
    if request.style_mix is not None:
        raise SvpError("--style-mix needs two styles")
    return styles[0] if styles else None


def prepare_inputs(params: Params, gen: Generator, request: Request) -> GenerationInputs:
    """The request's portrait, speech, head motion and style as the pipeline's inputs."""
    g, d, f = params.generate, gen.diffusion, gen.features
    detector = DlibLandmarks(f["dlib_predictor"])
    fps = float(f["fps"])
    speech = read_speech(request.audio, fps, f["whisper_checkpoint"], f["min_audio_dbfs"],
                         g.max_audio_s)
    portrait = read_portrait(request.image, detector, f["crop_scale"], d.resolution)
    reference_kps = head_kps(portrait.landmarks)
    n = speech.n_frames
    if request.pose_video:
        pose, _ = read_video_landmarks(request.pose_video, detector, fps, "pose video")
        pose = head_kps(pose)
        pose = pose[np.arange(n) % len(pose)]  # a shorter pose video loops
        kps = retargeted_kps(reference_kps, pose)
    else:
        loudness, _ = frame_features(speech.samples, whisper_features.SAMPLE_RATE, fps, n)
        kps = derived_kps(reference_kps, n, fps, loudness, request.seed, g.head_motion)
    style = choose_style(request, gen, detector)
    if style is None:
        log.info("no style given: the style attention is off")
    else:
        log.info("style: %s (%s)", style.source, "mean" if request.style_mean else
                 f"a draw, seed {request.seed}")
    audio = whisper_features.relative_to_silence(speech.features, f["whisper_checkpoint"], fps)
    return GenerationInputs(portrait.crop, kps, audio,
                            None if style is None else style.draw(request.seed,
                                                                  request.style_mean))


def generate(params: Params, request: Request, generator: Generator | None = None) -> dict:
    """Make `request.out`; returns what was made (frames, seconds, the models used)."""
    gen = generator or load_generator(params.generate, params.diffusion)
    g, d, fps = params.generate, gen.diffusion, float(gen.features["fps"])
    for line in gen.provenance:
        log.info("model: %s", line)
    inputs = prepare_inputs(params, gen, request)
    pipeline = TalkingHeadPipeline(gen.vae, gen.denoiser, d, g.window, g.overlap,
                                   g.window_batch, g.decode_batch)
    frames = pipeline(inputs, steps=request.steps or d.sampling.steps,
                      guidance=request.guidance or d.sampling.guidance, seed=request.seed)
    written = write_mp4(frames, request.out, fps, request.audio, g.crf)
    log.info("%s: %d frames, %.2f s", request.out, written, written / fps)
    return {"out": str(Path(request.out)), "frames": written, "seconds": written / fps,
            "models": gen.provenance}


def with_models(params: Params, denoiser: str | None = None, vae: str | None = None,
                style_model: str | None = None, model: str | None = None) -> Params:
    """`params` with another registered generator (`model`, a models:/ URI) or with some of
    its parts replaced (folders or registry URIs; the others come from `generate`'s parts, not
    from a registered generator)."""
    g = params.generate
    if model:
        return replace(params, generate=replace(g, model=model))
    if not (denoiser or vae or style_model):
        return params
    return replace(params, generate=replace(
        g, model=None, denoiser=denoiser or g.denoiser, vae=vae or g.vae,
        style_model=style_model or g.style_model))
