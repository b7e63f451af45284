"""`svp generate` on a tiny random generator: long videos without seams, exact style mixing,
a playable mp4 as long as the speech, and one-line errors for bad input with no partial mp4."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io.wavfile
import torch
import yaml

from components.config import FastSamplingConfig, GenerateConfig, SamplingConfig, load_params
from components.diffusion.frames import audio_windows, kps_images
from components.diffusion.models.build import add_motion_modules, new_denoiser
from components.diffusion.models.schedule import SOLVERS, sampling_scheduler, solver_scheduler
from components.diffusion.models.vae import decode, encode, new_vae
from components.errors import BAD_INPUT_EXIT_CODE, SvpError
from components.evaluation.rows import batched
from components.generation.assemble import load_generator, save_generator
from components.generation.generate import Request, generate
from components.generation.head_motion import derived_kps, retargeted_kps
from components.generation.input_settings import InputSettings
from components.generation.pipeline import (
    GenerationInputs,
    Sampling,
    TalkingHeadPipeline,
    blend_weights,
    guided_prediction,
    new_pipeline,
    window_starts,
)
from components.generation.style import Style, load_style, mix, save_style
from components.generation.style_presets import StylePresets
from components.media import decode_audio, decode_video, probe_video
from components.precision import bf16_units
from components.registry.generator import register_generator
from components.runtime import mlflow_tracking_uri
from components.style.extractor import StyleExtractor
from components.synth.speech import write_wav
from components.training.seeds import step_random, torch_generator
from tests.conftest import ffmpeg
from tests.test_diffusion_model import TINY

PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"


def tiny_parts(seed: int = 0, blind: bool = False):
    """A random VAE and denoiser. A `blind` denoiser cannot see its noisy latents (conv_in
    zeroed): sampled in one step its video is its prediction from the conditions alone, as smooth
    as they are, and it depends on the window through the motion modules, so a window boundary
    shows unless windows are blended."""
    torch.manual_seed(seed)
    denoiser = new_denoiser(TINY)
    add_motion_modules(denoiser, TINY)
    for p in denoiser.parameters():  # as after training: nothing zero-initialised
        p.data.add_(0.02 * torch.randn_like(p))
    if blind:
        denoiser.unet.conv_in.weight.data.zero_()
    torch.manual_seed(seed + 1)
    return new_vae(TINY).eval(), denoiser.eval()


def pipeline_of(vae, denoiser, steps: int = 1, guidance: float = 2.0, window: int = 8,
                overlap: int = 2) -> TalkingHeadPipeline:
    sampling = SamplingConfig(steps=steps, guidance=guidance, window=window, overlap=overlap)
    return new_pipeline(vae, denoiser, dataclasses.replace(TINY, sampling=sampling))


def smooth_inputs(n: int, seed: int = 0, style: np.ndarray | None = None) -> GenerationInputs:
    rng = np.random.default_rng(seed)
    base = np.array([[6, 14], [26, 14], [11, 13], [21, 13], [16, 12], [16, 14], [16, 16],
                     [16, 18]], np.float32)
    t = np.arange(n)[:, None, None]
    kps = base + 1.5 * np.sin(2 * np.pi * t / 60) * np.array([1.0, 0.5])
    phase = rng.uniform(0, 2 * np.pi, (1, 5, 2, 384))
    audio = np.sin(2 * np.pi * t.reshape(-1, 1, 1, 1) / 40 + phase)  # smooth, speech-like
    reference = rng.integers(0, 255, (32, 32, 3), np.uint8)
    return GenerationInputs(reference, kps.astype(np.float32), audio.astype(np.float32), style)


def frame_changes(frames: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))


def seam_ratio(frames: np.ndarray, window: int, overlap: int) -> float:
    """Mean frame-to-frame change across window edges over the mean change inside windows."""
    changes = frame_changes(frames)
    edges = set()
    for s in window_starts(len(frames), window, overlap):
        edges |= {s - 1, s + window - 1}
    edges = sorted(e for e in edges if 0 <= e < len(changes))
    inside = np.setdiff1d(np.arange(len(changes)), edges)
    return float(changes[edges].mean() / changes[inside].mean())


def test_windows_cover_every_frame_and_blend_smoothly():
    assert window_starts(10, 16, 4) == [0]
    assert window_starts(40, 16, 4) == [0, 12, 24]
    assert window_starts(41, 16, 4) == [0, 12, 24, 25]
    weights = blend_weights(8, 3)
    torch.testing.assert_close(weights, torch.tensor([1, 2, 3, 4, 4, 3, 2, 1]) / 4.0)


def test_twenty_seconds_have_no_seams():
    """500 frames (20 s) in windows of 8: the change across window edges is within 1.25x of the
    change inside windows. Without overlap the same model shows its seams, so the measure can see
    them (random tiny models of three seeds: 0.97-1.23x blended, 1.37-1.89x without overlap)."""
    vae, denoiser = tiny_parts(blind=True)
    inputs = smooth_inputs(500)

    def video(overlap: int) -> np.ndarray:
        pipeline = pipeline_of(vae, denoiser, window=8, overlap=overlap)
        return np.stack(list(pipeline(inputs, seed=0, window_batch=16)))

    blended = video(overlap=3)
    assert blended.shape == (500, 32, 32, 3)
    assert seam_ratio(blended, 8, 3) < 1.25
    assert seam_ratio(video(overlap=0), 8, 0) > 1.3


def test_style_mix_ends_are_the_single_styles_and_between_is_between():
    vae, denoiser = tiny_parts(blind=True)
    for name, p in denoiser.named_parameters():  # a style attention that matters
        if ".processor.style.to_out" in name:
            p.data.mul_(10)
    rng = np.random.default_rng(3)
    a = Style(rng.standard_normal(64).astype(np.float32) * 3, np.full(64, 0.5, np.float32), "a")
    b = Style(-a.mean, np.full(64, 0.2, np.float32), "b")
    pipeline = pipeline_of(vae, denoiser, window=8, overlap=2)

    def video(style: Style, mean: bool = False) -> np.ndarray:
        inputs = smooth_inputs(12, style=style.draw(seed=5, use_mean=mean))
        return np.stack(list(pipeline(inputs, seed=0))).astype(float)

    np.testing.assert_array_equal(video(mix(a, b, 0.0)), video(a))  # the draws' ends
    np.testing.assert_array_equal(video(mix(a, b, 1.0)), video(b))
    first, second = video(a, mean=True), video(b, mean=True)  # the middle, without the noise
    half = video(mix(a, b, 0.5), mean=True)
    apart = np.abs(first - second).mean()
    assert apart > 0
    assert np.abs(half - first).mean() < apart and np.abs(half - second).mean() < apart


def test_style_files_round_trip_and_refuse_foreign_files(tmp_path):
    style = Style(np.arange(4, dtype=np.float32), np.full(4, 0.5, np.float32), "clip.mp4")
    save_style(style, tmp_path / "s.safetensors", "data/style")
    loaded = load_style(tmp_path / "s.safetensors")
    np.testing.assert_allclose(loaded.std, style.std, rtol=1e-6)
    np.testing.assert_array_equal(loaded.mean, style.mean)
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04not a style")
    with pytest.raises(SvpError, match=r"bad\.safetensors: not a style file"):
        load_style(tmp_path / "bad.safetensors")


@dataclasses.dataclass
class Tiny:
    folder: Path  # a saved generator
    pipeline: TalkingHeadPipeline  # loaded from it
    settings: GenerateConfig
    params: Path  # a params.yaml whose generate.model is the folder


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory) -> Tiny:
    """A tiny random generator saved as a generator folder, as `svp assemble` saves one."""
    root = tmp_path_factory.mktemp("generator")
    vae, denoiser = tiny_parts()
    torch.manual_seed(0)
    style = StyleExtractor(expression_dim=16, d_model=64)
    settings = InputSettings(fps=25.0, crop_scale=1.6, dlib_predictor=PREDICTOR,
                             training_data="tiny")
    rng = np.random.default_rng(0)
    from components.face_template import TEMPLATE
    settings.mean_shape.copy_(torch.from_numpy(TEMPLATE[:, :2] * 20 + 50))
    settings.components.copy_(torch.from_numpy(np.linalg.qr(rng.standard_normal((136, 16)))[0].T))
    settings.scales.fill_(1.0)
    tiny = dataclasses.replace(TINY, sampling=dataclasses.replace(
        TINY.sampling, steps=2, fast=FastSamplingConfig(steps=2)))
    presets = StylePresets(("happy", "sad"), 64, (1, 1))
    presets.mean.copy_(torch.randn(2, 64))
    presets.std.fill_(0.1)
    save_generator(new_pipeline(vae, denoiser, tiny, style, settings, style_presets=presets),
                   root / "generator")
    params = load_params()
    generate_cfg = dataclasses.replace(params.generate, model=str(root / "generator"),
                                       max_audio_s=20)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(
        dataclasses.replace(params, generate=generate_cfg))))))
    return Tiny(root / "generator", load_generator(root / "generator"), generate_cfg, path)


@pytest.fixture(scope="module")
def media(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    identity = sorted(p for p in tiny_dataset.iterdir() if p.is_dir())[0]
    video = identity / "video/front/happy/level_3/001.mp4"
    frames, _ = decode_video(video)
    portrait = root / "portrait.png"
    big = cv2.copyMakeBorder(frames[0], 40, 40, 90, 90, cv2.BORDER_REPLICATE)  # any size
    cv2.imwrite(str(portrait), big[..., ::-1])
    blank = root / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 160, 3), 90, np.uint8))
    silent, empty, corrupt = root / "silent.wav", root / "empty.wav", root / "corrupt.mp3"
    write_wav(silent, np.zeros(16000, np.float32), 16000)
    write_wav(empty, np.zeros(0, np.float32), 16000)
    corrupt.write_bytes(b"\x00\x01not audio" * 100)
    speech, rate = decode_audio(identity / "audio/sad/level_3/001.wav")
    long = root / "long.wav"
    write_wav(long, np.tile(speech, int(25 * rate / len(speech)) + 1), rate)
    not_finite = root / "not_finite.wav"  # a float WAV: NaN and infinity survive decoding
    samples = speech.astype(np.float32)
    samples[1000:1100], samples[2000] = np.nan, np.inf
    scipy.io.wavfile.write(not_finite, rate, samples)
    tiny = root / "tiny.png"  # the face fits, the image is below the 32-pixel crop
    cv2.imwrite(str(tiny), cv2.resize(frames[0], (16, 16), interpolation=cv2.INTER_AREA))
    faceless = root / "faceless.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=128x128:r=25:d=1", "-f", "lavfi", "-i",
           "sine=f=300:d=1", "-shortest", "-pix_fmt", "yuv420p", str(faceless))
    return {"portrait": portrait, "blank": blank, "speech": identity / "audio/sad/level_3/001.wav",
            "style_video": video, "silent": silent, "empty": empty, "corrupt": corrupt,
            "long": long, "faceless": faceless, "not_finite": not_finite, "tiny": tiny}


def test_retargeting_moves_the_portrait_as_the_pose_video_moves():
    portrait = np.array([[0, 0], [20, 0], [5, -2], [15, -2], [10, 0], [10, 2], [10, 4],
                         [10, 6]], np.float32)
    pose = np.stack([2 * portrait + [100, 50], 2 * portrait + [106, 50]])  # twice as big
    kps = retargeted_kps(portrait, pose)
    np.testing.assert_allclose(kps[0], portrait, atol=1e-4)  # its own geometry
    np.testing.assert_allclose(kps[1], portrait + [3, 0], atol=1e-4)  # half the pose's shift
    still = derived_kps(portrait, 50, 25, np.zeros(50), seed=0, amplitude=0.0)
    np.testing.assert_allclose(still, np.broadcast_to(portrait, still.shape), atol=1e-5)
    moving = derived_kps(portrait, 50, 25, np.linspace(0, 1, 50), seed=0, amplitude=0.03)
    assert 0 < np.abs(moving - portrait).max() < 0.2 * 20  # sways, within a fifth of the face


def test_generate_writes_a_playable_mp4_as_long_as_the_speech(tiny_generator, media, tmp_path):
    out = tmp_path / "out.mp4"
    made = generate(tiny_generator.pipeline, Request(
        str(media["portrait"]), str(media["speech"]), str(out),
        style_videos=(str(media["style_video"]),), pose_video=str(media["style_video"])),
        tiny_generator.settings)
    speech, rate = decode_audio(media["speech"])
    assert made["frames"] == round(len(speech) / rate * 25)
    info = probe_video(out)
    assert info.problem is None and info.n_frames == made["frames"]
    assert (info.width, info.height) == (32, 32)
    sound, _ = decode_audio(out)
    assert abs(len(sound) / rate - len(speech) / rate) < 0.1
    assert made["models"][0] == f"generator {tiny_generator.folder}"
    assert made["models"][-1] == "trained on tiny"
    bf16 = "; bf16 autocast" if bf16_units(torch.device("cpu")) else ""  # bf16: auto
    assert made["sampling"] == ("fast sampler: dpmsolver++, 2 steps, guidance 2 on step 2 "
                                "(3 denoiser passes) (the generator's own)" + bf16)


def test_style_presets_and_progress_reports(tiny_generator, media, tmp_path):
    """A preset is the style saved with the generator; `report` hears every phase and step."""
    heard = []
    made = generate(tiny_generator.pipeline, Request(
        str(media["portrait"]), str(media["speech"]), str(tmp_path / "preset.mp4"),
        style_presets=("happy", "sad"), style_mix=0.0, style_mean=True),
        tiny_generator.settings, lambda what, done: heard.append((what, done)))
    happy = tiny_generator.pipeline.style_presets.style("happy")
    np.testing.assert_array_equal(happy.mean, tiny_generator.pipeline.style_presets.mean[0])
    assert [w for w, _ in heard] == [
        "reading the speech", "finding the face", "reading the style", "denoising",
        "denoising: step 1 of 2", "denoising: step 2 of 2", "decoding and encoding the video"]
    assert [d for _, d in heard] == sorted(d for _, d in heard) and heard[-1][1] < 1
    assert made["crop"].shape == (32, 32, 3)
    same = generate(tiny_generator.pipeline, Request(
        str(media["portrait"]), str(media["speech"]), str(tmp_path / "happy.mp4"),
        style_presets=("happy",), style_mean=True), tiny_generator.settings)
    assert probe_video(Path(same["out"])).problem is None
    with pytest.raises(SvpError, match=r"no style preset 'joy' in this generator \(it has: "
                       r"happy, sad\)"):
        generate(tiny_generator.pipeline, Request(
            str(media["portrait"]), str(media["speech"]), str(tmp_path / "joy.mp4"),
            style_presets=("joy",)), tiny_generator.settings)


@pytest.mark.parametrize("change, message", [
    ({"image": "blank"}, "blank.png: no face found in the image"),
    ({"audio": "corrupt"}, "corrupt.mp3: cannot decode audio"),
    ({"audio": "silent"}, "silent.wav: the audio is silent"),
    ({"audio": "not_finite"}, "not_finite.wav: the audio has 101 NaN or infinite samples"),
    ({"image": "tiny"}, "tiny.png: the image is 16x16 pixels, smaller than the generator's "
                        "32x32 face crop"),
    ({"audio": "empty"}, "empty.wav: "),
    ({"audio": "long"}, "long.wav: 2\\d\\.\\d s of audio is over the maximum of 20 s"),
    ({"style_videos": ("faceless",)}, "faceless.mp4: no face found in the style video"),
])
def test_bad_input_is_one_line_and_leaves_no_mp4(tiny_generator, media, tmp_path, change,
                                                 message):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier video")
    fields = {"image": "portrait", "audio": "speech", "style_videos": ("style_video",)} | change
    request = Request(str(media[fields["image"]]), str(media[fields["audio"]]), str(out),
                      style_videos=tuple(str(media[v]) for v in fields["style_videos"]))
    with pytest.raises(SvpError, match=message) as err:
        generate(tiny_generator.pipeline, request, tiny_generator.settings)
    assert "\n" not in str(err.value)
    assert out.read_bytes() == b"an earlier video"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_the_cli_reports_bad_input_in_one_line(tiny_generator, media, tmp_path):
    params = tiny_generator.params
    out = tmp_path / "out.mp4"
    run = subprocess.run([str(Path(sys.executable).with_name("svp")), "generate", "--params",
                          str(params), "--image", str(media["blank"]), "--audio",
                          str(media["speech"]), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == BAD_INPUT_EXIT_CODE
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {media['blank']}: no face found in the image"]
    assert not out.exists()


def test_a_missing_model_is_one_line(tmp_path):
    with pytest.raises(SvpError, match="nowhere: no generator here"):
        load_generator(tmp_path / "nowhere")


def test_without_a_champion_the_default_model_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(SvpError, match=r"svp-generator@champion: cannot load this registered "
                       r"generator .* run `dvc repro`") as err:
        load_generator("models:/svp-generator@champion")
    assert "\n" not in str(err.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registered_generator_answers_over_http(tiny_generator, media, tmp_path):
    """`mlflow models serve` on svp-generator (loopback): base64 inputs in, an mp4 out; a
    request naming a server file outside the operator's folder is refused."""
    version = register_generator(tiny_generator.folder, root=tmp_path)
    assert register_generator(tiny_generator.folder, root=tmp_path) == version  # idempotent
    allowed = tmp_path / "served"
    allowed.mkdir()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         f"models:/svp-generator/{version}", "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        env=os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                          "MLFLOW_TRACKING_URI": mlflow_tracking_uri(tmp_path),
                          "SVP_SERVE_FILES": str(allowed)})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text()[-2000:])
        b64 = lambda key: base64.b64encode(media[key].read_bytes()).decode()  # noqa: E731
        body = json.dumps({"dataframe_records": [
            {"image": b64("portrait"), "audio": b64("speech"), "style": b64("style_video")}]})
        request = urllib.request.Request(f"{url}/invocations", body.encode(),
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=300).read())
        # a path outside SVP_SERVE_FILES: refused, the file never read
        secret = tmp_path / "secret.png"
        secret.write_bytes(media["portrait"].read_bytes())
        body = json.dumps({"dataframe_records": [
            {"image": str(secret), "audio": b64("speech")}]})
        request = urllib.request.Request(f"{url}/invocations", body.encode(),
                                         {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=300)
        assert "image: not base64 bytes" in refused.value.read().decode()
    finally:
        server.terminate()
        server.wait(30)
    video = tmp_path / "served.mp4"
    video.write_bytes(base64.b64decode(answer["predictions"][0]["video"]))
    speech, rate = decode_audio(media["speech"])
    assert probe_video(video).n_frames == round(len(speech) / rate * 25)


def test_guidance_zero_is_the_unconditional_model_not_the_default():
    """Guidance 0 samples what the dropped conditions predict, so no condition matters; the old
    `guidance or default` ran the default 2.0 instead, where they do."""
    vae, denoiser = tiny_parts()
    pipeline = pipeline_of(vae, denoiser, steps=2, guidance=2.0)
    a, b = smooth_inputs(8, seed=1), smooth_inputs(8, seed=2)  # other portrait, other speech
    unconditional = [np.stack(list(pipeline(x, seed=0, sampling=pipeline.sampling(guidance=0.0))))
                     for x in (a, b)]
    np.testing.assert_array_equal(unconditional[0], unconditional[1])
    guided = [np.stack(list(pipeline(x, seed=0))) for x in (a, b)]
    assert np.abs(guided[0].astype(int) - guided[1]).mean() > 1


def test_guidance_mixes_unconditional_and_conditional_the_right_way_round():
    vae, denoiser = tiny_parts()
    pipeline = pipeline_of(vae, denoiser)
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[1]
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 4, 3, 8, 8), generator=g)
    kps = torch.rand((2, 3, 3, 32, 32), generator=g)
    audio = torch.randn((2, 3, 5, 10, 384), generator=g)
    bank = denoiser.encode_reference(torch.randn((2, 4, 8, 8), generator=g))
    with torch.no_grad():
        guided = guided_prediction(denoiser, scheduler, latents, t, bank, kps, audio, None, 3.0)
        x = scheduler.scale_model_input(latents, t)
        off = torch.zeros(2, dtype=torch.bool)
        uncond = denoiser(x, t.expand(2), bank, kps, audio, None, off)
        cond = denoiser(x, t.expand(2), bank, kps, audio, None, ~off)
    assert (cond - uncond).abs().mean() > 1e-3
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)


def test_one_window_is_one_plain_sampling_loop_and_a_batch_is_its_videos():
    """The pipeline's loop against the textbook one (Euler, guidance, one step per timestep),
    and `generate_batch` (the stage checks') against `__call__` (svp generate's)."""
    vae, denoiser = tiny_parts()
    pipeline = pipeline_of(vae, denoiser, steps=3, guidance=2.0, window=8)
    inputs = smooth_inputs(6, seed=4)
    video = np.stack(list(pipeline(inputs, seed=7)))

    scheduler = copy.deepcopy(pipeline.scheduler)
    scheduler.set_timesteps(3)
    reference = encode(vae, inputs.reference[None])
    bank = denoiser.encode_reference(reference)
    kps = torch.from_numpy(kps_images(inputs.kps, 32))[None]
    audio = torch.from_numpy(audio_windows(inputs.audio, np.arange(6), 5))[None]
    latents = torch.randn((1, 4, 6, 8, 8), generator=torch_generator(7, "latents")) * \
        scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(latents, t)
            keep = torch.tensor([False, True])
            both = denoiser(torch.cat([x, x]), t.expand(2), {k: torch.cat([f, f]) for k, f in
                                                             bank.items()},
                            torch.cat([kps, kps]), torch.cat([audio, audio]), None, keep)
            uncond, cond = both.chunk(2)
            latents = scheduler.step(uncond + 2.0 * (cond - uncond), t, latents).prev_sample
    plain = decode(vae, latents[0].permute(1, 0, 2, 3))
    assert np.abs(video.astype(int) - plain).max() <= 1
    batch = pipeline.generate_batch([inputs, smooth_inputs(6, seed=5)], seed=7)
    assert np.abs(batch[0].astype(int) - video).max() <= 1
    same_noise = pipeline.generate_batch([smooth_inputs(6, seed=5), inputs], seed=7,
                                         noise=[0, 0])  # evaluate's batches of cases
    assert np.abs(same_noise[1].astype(int) - video).max() <= 1
    assert np.abs(same_noise[0].astype(int) - batch[1]).max() > 1  # another noise than index 1
    with pytest.raises(SvpError, match="2 videos but 1 noise indices"):
        pipeline.generate_batch([inputs, inputs], seed=7, noise=[0])


def test_each_evaluation_case_has_its_own_noise_and_style_draw_whatever_the_batch():
    """evaluate's rows: the k-th case from the k-th latent noise and style draw of the seed,
    so the spread between cases includes the sampling noise's; batching keeps each case's."""
    vae, denoiser = tiny_parts()
    pipeline = pipeline_of(vae, denoiser, steps=2, guidance=2.0, window=8)
    inputs = smooth_inputs(6, seed=4)
    alone = [pipeline.generate_batch([inputs], seed=7, noise=[k])[0] for k in range(3)]
    for batch in (1, 2):
        made = batched(pipeline, [inputs] * 3, pipeline.sampling(), seed=7, batch=batch)
        for k in range(3):
            assert np.abs(made[k].astype(int) - alone[k]).max() <= 3, (batch, k)
    assert np.abs(alone[0].astype(int) - alone[1]).max() > 3  # the same inputs, another draw
    style = Style(np.zeros(8, np.float32), np.ones(8, np.float32), "s")
    draws = [style.draw(seed=7, index=k) for k in (0, 0, 1)]
    assert np.array_equal(draws[0], draws[1]) and not np.allclose(draws[0], draws[2])
    assert np.array_equal(draws[0], style.draw(seed=7))  # svp generate's draw is index 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_lands_on_the_data_an_exact_model_predicts(solver):
    """With a model that knows the clean latents, the sampling ODE's solution is those latents
    whatever the solver: each solver, driven through the interface the pipeline's loop uses
    (init_noise_sigma, scale_model_input, step), must end there in a few steps. A solver fed
    unscaled inputs or the wrong parameterisation ends elsewhere."""
    scheduler = solver_scheduler(sampling_scheduler(TINY.noise).config, solver)
    scheduler.set_timesteps(6)
    clean = torch.randn((1, 4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    latents = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)) * \
        scheduler.init_noise_sigma
    alphas = scheduler.alphas_cumprod
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)  # the DDPM-form noisy latents, x_t
        a = alphas[int(t)].to(torch.float32)
        noise = (x - a.sqrt() * clean) / (1 - a).sqrt()
        velocity = a.sqrt() * noise - (1 - a).sqrt() * clean  # v-prediction's target
        latents = scheduler.step(velocity, t, latents).prev_sample
    torch.testing.assert_close(latents, clean, atol=2e-3, rtol=0)


def fast_pipeline(vae, denoiser, guidance_from: int = 2) -> TalkingHeadPipeline:
    fast = dataclasses.replace(TINY.sampling.fast, steps=4, guidance_from=guidance_from)
    sampling = SamplingConfig(steps=3, guidance=2.0, window=8, overlap=2, fast=fast)
    return new_pipeline(vae, denoiser, dataclasses.replace(TINY, sampling=sampling))


def test_the_fast_sampler_guides_from_its_guidance_from_step_on(tmp_path):
    """4 DPM-Solver++ steps guided from the third: the denoiser sees a single batch twice, then
    a doubled one twice (6 passes, against the paper sampler's 3 x 2); it survives a save and
    load, and guiding every step gives another video."""
    vae, denoiser = tiny_parts()
    pipeline = fast_pipeline(vae, denoiser)
    batches: list[int] = []
    hook = denoiser.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    inputs = smooth_inputs(6, seed=4)
    fast = np.stack(list(pipeline(inputs, seed=7, sampling=pipeline.sampling("fast"))))
    assert batches == [1, 1, 2, 2]
    batches.clear()
    paper = np.stack(list(pipeline(inputs, seed=7)))
    assert batches == [2, 2, 2]
    hook.remove()
    assert pipeline.sampling("fast") == Sampling(4, 2.0, "dpmsolver++", 2)
    assert pipeline.sampling("fast").passes == 6 and pipeline.sampling().passes == 6
    assert pipeline.sampling("fast").describe() == \
        "dpmsolver++, 4 steps, guidance 2 on steps 3-4 (6 denoiser passes)"
    assert np.abs(fast.astype(int) - paper).mean() > 0.5
    save_generator(pipeline, tmp_path / "g")
    loaded = load_generator(tmp_path / "g")
    assert loaded.sampling("fast") == pipeline.sampling("fast")
    np.testing.assert_array_equal(
        np.stack(list(loaded(inputs, seed=7, sampling=loaded.sampling("fast")))), fast)
    every = fast_pipeline(vae, denoiser, guidance_from=0)
    guided = np.stack(list(every(inputs, seed=7, sampling=every.sampling("fast"))))
    assert np.abs(guided.astype(int) - fast).mean() > 0.5


def test_a_generator_without_a_fast_sampler_falls_back_unless_asked(tiny_generator, media,
                                                                    tmp_path, caplog):
    """A generator assembled before the fast sampler existed: `svp generate` by default samples
    as the paper does and says so; asking for `--quality fast` is a one-line error."""
    folder = tmp_path / "old"
    save_generator(tiny_generator.pipeline, folder)
    index = json.loads((folder / "model_index.json").read_text())
    del index["fast"]
    (folder / "model_index.json").write_text(json.dumps(index))
    old = load_generator(folder)
    assert old.qualities == ("paper",)
    with caplog.at_level("WARNING"):
        made = generate(old, Request(str(media["portrait"]), str(media["speech"]),
                                     str(tmp_path / "a.mp4")), tiny_generator.settings)
    assert made["sampling"].startswith("paper sampler: euler, 2 steps")
    assert "no fast sampler: sampling with the paper's" in caplog.text
    with pytest.raises(SvpError, match=r"no fast sampler .* run `svp assemble` again"):
        generate(old, Request(str(media["portrait"]), str(media["speech"]),
                              str(tmp_path / "b.mp4"), quality="fast"), tiny_generator.settings)
    assert not (tmp_path / "b.mp4").exists()
    made = generate(tiny_generator.pipeline, Request(
        str(media["portrait"]), str(media["speech"]), str(tmp_path / "c.mp4")),
        tiny_generator.settings)
    assert made["sampling"].startswith("fast sampler: dpmsolver++, 2 steps")


def test_the_same_seed_gives_the_same_video_bytes(tiny_generator, media, tmp_path):
    def make(name: str, seed: int) -> bytes:
        out = tmp_path / name
        generate(tiny_generator.pipeline, Request(
            str(media["portrait"]), str(media["speech"]), str(out), seed=seed),
            tiny_generator.settings)
        return out.read_bytes()

    first = make("a.mp4", 3)
    assert make("b.mp4", 3) == first
    assert make("c.mp4", 4) != first


def test_style_noise_and_latent_noise_are_different_streams():
    style = Style(np.zeros(64, np.float32), np.ones(64, np.float32), "s").draw(seed=0)
    latent = torch.randn(64, generator=torch_generator(0, "latents")).numpy()
    assert np.abs(style - latent).max() > 0.1  # the old manual_seed(seed) made them equal
    old = torch.randn(64, generator=torch.Generator().manual_seed(0)).numpy()
    assert np.abs(style - old).max() > 0.1
    # training: (seed, step, rank) never meet (the old sums had step 1/rank 0 = step 0/rank 31)
    draws = {tuple(torch.randn(4, generator=step_random(0, step, rank).torch).tolist())
             for step in range(40) for rank in range(40)}
    assert len(draws) == 1600


HOSTILE_SETTINGS = [
    (["--steps", "0"], "steps must be a whole number of at least 1, got 0"),
    (["--steps", "-3"], "steps must be a whole number of at least 1, got -3"),
    (["--guidance", "nan"], "guidance must be a finite number of at least 0, got nan"),
    (["--guidance", "inf"], "guidance must be a finite number of at least 0, got inf"),
    (["--guidance", "-1"], "guidance must be a finite number of at least 0"),
    (["--seed", "-1"], r"seed must be a whole number in \[0, "),
    (["--seed", str(2**63)], r"seed must be a whole number in \[0, "),
    (["--style", "a.npz", "--style", "b.npz", "--style-mix", "1.5"],
     r"--style-mix must lie in \[0, 1\], got 1.5"),
    (["--style", "a.npz", "--style", "b.npz", "--style-mix", "nan"],
     r"--style-mix must lie in \[0, 1\], got nan"),
    (["--style", "a.npz", "--style", "b.npz"], "two styles need --style-mix"),
    (["--style", "a.npz", "--style-mix", "0.5"], "--style-mix needs two styles"),
    (["--style", "a.npz", "--style", "b.npz", "--style", "a.npz", "--style-mix", "0.5"],
     "at most two styles"),
    (["--style", "missing.npz"], "missing.npz: style file not found"),
    (["--style-video", "missing.mp4"], "missing.mp4: style video not found"),
    (["--pose-video", "missing.mp4"], "missing.mp4: pose video not found"),
    (["--image", "missing.png"], "missing.png: image not found"),
    (["--audio", "missing.wav"], "missing.wav: audio not found"),
    (["--out", "FOLDER"], "is a folder; --out names the mp4 file to write"),
    (["--out", "nowhere/out.mp4"], "no such folder to write out.mp4 in"),
    (["--out", "out.avi"], "the output is an H.264 mp4; name it \\*.mp4"),
    (["--quality", "turbo"], "--quality must be one of paper, fast, got 'turbo'"),
    pytest.param(["--out", "read-only/out.mp4"], "read-only: this folder cannot be written to",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")),
]


@pytest.mark.parametrize("options, message", HOSTILE_SETTINGS)
def test_hostile_settings_are_refused_before_any_model_is_loaded(tmp_path, monkeypatch, options,
                                                                 message):
    """`svp generate` as the command line runs it; loading a model would fail the test."""
    from typer.testing import CliRunner

    import components.generation.assemble as assemble
    from flows.cli import app

    def no_loading(source):
        raise AssertionError(f"a model was loaded before refusing: {source}")

    monkeypatch.setattr(assemble, "load_generator", no_loading)
    monkeypatch.chdir(tmp_path)
    for name in ("p.png", "s.wav", "a.npz", "b.npz"):
        Path(name).write_bytes(b"x")
    Path("read-only").mkdir(mode=0o555)
    options = [str(tmp_path) if o == "FOLDER" else o for o in options]
    defaults = {"--image": "p.png", "--audio": "s.wav", "--out": "out.mp4",
                "--model": "nowhere", "--params": str(Path(__file__).parents[1] / "params.yaml")}
    args = [*options, *(x for k, v in defaults.items() if k not in options for x in (k, v))]
    run = CliRunner().invoke(app, ["generate", *args])
    assert isinstance(run.exception, SvpError), run.output
    assert re.search(message, str(run.exception)) and "\n" not in str(run.exception)
    assert not Path("out.mp4").exists()
    Request("p.png", "s.wav", str(tmp_path / "out.mp4"), guidance=0.0).check()  # 0 is allowed


def test_bf16_autocast_samples_the_same_video_twice_close_to_fp32():
    """`pipeline.bf16` (`bf16: on`, or `auto` on a CPU with bf16 units) runs the denoiser in
    bf16 and the sampler's arithmetic in fp32: deterministic, and near the fp32 video."""
    vae, denoiser = tiny_parts()
    pipeline = pipeline_of(vae, denoiser, steps=3)
    inputs = smooth_inputs(6, seed=4)
    fp32 = np.stack(list(pipeline(inputs, seed=7))).astype(int)
    pipeline.bf16 = True
    bf16 = np.stack(list(pipeline(inputs, seed=7))).astype(int)
    assert np.array_equal(np.stack(list(pipeline(inputs, seed=7))), bf16)
    difference = np.abs(bf16 - fp32)
    assert 0 < difference.mean() < 2
