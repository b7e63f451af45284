"""`svp generate` on a tiny random generator: long videos without seams, exact style mixing,
a playable mp4 as long as the speech, and one-line errors for bad input with no partial mp4."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from components.config import load_params
from components.diffusion.build import add_motion_modules, new_denoiser
from components.diffusion.vae import new_vae
from components.errors import BAD_INPUT_EXIT_CODE, SvpError
from components.features.expression import ExpressionBasis
from components.generation.generate import Request, generate
from components.generation.head_motion import derived_kps, retargeted_kps
from components.generation.pipeline import (
    GenerationInputs,
    TalkingHeadPipeline,
    blend_weights,
    window_starts,
)
from components.generation.registry import register_generator
from components.generation.style import Style, load_style, mix, save_style
from components.media import decode_audio, decode_video, probe_video
from components.runtime import mlflow_tracking_uri
from components.style.extractor import StyleExtractor
from components.synth.speech import write_wav
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
    """500 frames (20 s) in windows of 8: the change across window edges is within 1.2x of the
    change inside windows. Without overlap the same model shows its seams (1.7x), so the measure
    can see them."""
    vae, denoiser = tiny_parts(blind=True)
    inputs = smooth_inputs(500)

    def video(overlap: int) -> np.ndarray:
        pipeline = TalkingHeadPipeline(vae, denoiser, TINY, window=8, overlap=overlap,
                                       window_batch=16)
        return np.stack(list(pipeline(inputs, steps=1, guidance=2.0, seed=0)))

    blended = video(overlap=3)
    assert blended.shape == (500, 32, 32, 3)
    assert seam_ratio(blended, 8, 3) < 1.2
    assert seam_ratio(video(overlap=0), 8, 0) > 1.2


def test_style_mix_ends_are_the_single_styles_and_between_is_between():
    vae, denoiser = tiny_parts(blind=True)
    for name, p in denoiser.named_parameters():  # a style attention that matters
        if ".processor.style.to_out" in name:
            p.data.mul_(30)
    rng = np.random.default_rng(3)
    a = Style(rng.standard_normal(64).astype(np.float32) * 3, np.full(64, 0.5, np.float32), "a")
    b = Style(-a.mean, np.full(64, 0.2, np.float32), "b")
    pipeline = TalkingHeadPipeline(vae, denoiser, TINY, window=8, overlap=2)

    def video(style: Style) -> np.ndarray:
        inputs = smooth_inputs(12, style=style.draw(seed=5))
        return np.stack(list(pipeline(inputs, steps=1, guidance=2.0, seed=0))).astype(float)

    first, second, half = video(a), video(b), video(mix(a, b, 0.5))
    np.testing.assert_array_equal(video(mix(a, b, 0.0)), first)
    np.testing.assert_array_equal(video(mix(a, b, 1.0)), second)
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


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    """Params whose `generate` section points at a tiny random generator and features dir."""
    root = tmp_path_factory.mktemp("generator")
    vae, denoiser = tiny_parts()
    vae.save_pretrained(root / "vae")
    denoiser.save_pretrained(root / "denoiser")
    torch.manual_seed(0)
    StyleExtractor(expression_dim=16, d_model=64).save_pretrained(root / "style")
    features = root / "features"
    features.mkdir()
    (features / "config.json").write_text(json.dumps({
        "fps": 25.0, "crop_scale": 1.6, "dlib_predictor": PREDICTOR, "whisper_checkpoint": None,
        "min_audio_dbfs": -45.0, "manifest": "tiny"}))
    rng = np.random.default_rng(0)
    components = np.linalg.qr(rng.standard_normal((136, 16)))[0].T
    from components.face_template import TEMPLATE
    ExpressionBasis(TEMPLATE[:, :2] * 20 + 50, np.zeros((3, 136)), components, np.ones(16),
                    np.array(["A"])).save(features / "expression_basis.npz")
    pq.write_table(pa.table({"sample_id": ["a"], "identity": ["A"], "split": ["train"]}),
                   features / "index.parquet")
    params = load_params()
    g = dataclasses.replace(params.generate, model=None, denoiser=str(root / "denoiser"),
                            vae=str(root / "vae"), style_model=str(root / "style"),
                            features_dir=str(features), window=8, overlap=2, max_audio_s=20)
    return dataclasses.replace(params, generate=g, diffusion=dataclasses.replace(
        TINY, sampling=dataclasses.replace(TINY.sampling, steps=2)))


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
    faceless = root / "faceless.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=128x128:r=25:d=1", "-f", "lavfi", "-i",
           "sine=f=300:d=1", "-shortest", "-pix_fmt", "yuv420p", str(faceless))
    return {"portrait": portrait, "blank": blank, "speech": identity / "audio/sad/level_3/001.wav",
            "style_video": video, "silent": silent, "empty": empty, "corrupt": corrupt,
            "long": long, "faceless": faceless}


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
    made = generate(tiny_generator, Request(str(media["portrait"]), str(media["speech"]),
                                            str(out), style_videos=(str(media["style_video"]),),
                                            pose_video=str(media["style_video"])))
    speech, rate = decode_audio(media["speech"])
    assert made["frames"] == round(len(speech) / rate * 25)
    info = probe_video(out)
    assert info.problem is None and info.n_frames == made["frames"]
    assert (info.width, info.height) == (32, 32)
    sound, _ = decode_audio(out)
    assert abs(len(sound) / rate - len(speech) / rate) < 0.1
    assert any("denoiser" in line for line in made["models"])


@pytest.mark.parametrize("change, message", [
    ({"image": "blank"}, "blank.png: no face found in the image"),
    ({"audio": "corrupt"}, "corrupt.mp3: cannot decode audio"),
    ({"audio": "silent"}, "silent.wav: the audio is silent"),
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
        generate(tiny_generator, request)
    assert "\n" not in str(err.value)
    assert out.read_bytes() == b"an earlier video"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_the_cli_reports_bad_input_in_one_line(tiny_generator, media, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(tiny_generator)))))
    out = tmp_path / "out.mp4"
    run = subprocess.run([str(Path(sys.executable).with_name("svp")), "generate", "--params",
                          str(params), "--image", str(media["blank"]), "--audio",
                          str(media["speech"]), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == BAD_INPUT_EXIT_CODE
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {media['blank']}: no face found in the image"]
    assert not out.exists()


def test_a_missing_model_is_one_line(tiny_generator, media, tmp_path):
    params = dataclasses.replace(tiny_generator, generate=dataclasses.replace(
        tiny_generator.generate, denoiser=str(tmp_path / "nowhere")))
    with pytest.raises(SvpError, match="nowhere: no saved model here"):
        generate(params, Request(str(media["portrait"]), str(media["speech"]),
                                 str(tmp_path / "out.mp4")))
    assert not (tmp_path / "out.mp4").exists()


def test_without_a_champion_the_default_model_is_a_one_line_error(tiny_generator, media,
                                                                   tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = dataclasses.replace(tiny_generator, generate=dataclasses.replace(
        tiny_generator.generate, model="models:/svp-generator@champion"))
    with pytest.raises(SvpError, match=r"svp-generator@champion: cannot load this registered "
                       r"generator .* run `dvc repro`") as err:
        generate(params, Request(str(media["portrait"]), str(media["speech"]),
                                 str(tmp_path / "out.mp4")))
    assert "\n" not in str(err.value) and not (tmp_path / "out.mp4").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registered_generator_answers_over_http(tiny_generator, media, tmp_path):
    """`mlflow models serve` on svp-generator (loopback): base64 inputs in, an mp4 out."""
    version = register_generator(tiny_generator.generate, tiny_generator.diffusion,
                                 root=tmp_path)
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         f"models:/svp-generator/{version}", "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        env=os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                          "MLFLOW_TRACKING_URI": mlflow_tracking_uri(tmp_path)})
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
    finally:
        server.terminate()
        server.wait(30)
    video = tmp_path / "served.mp4"
    video.write_bytes(base64.b64decode(answer["predictions"][0]["video"]))
    speech, rate = decode_audio(media["speech"])
    assert probe_video(video).n_frames == round(len(speech) / rate * 25)
