"""The procedural dataset: real media, MEAD's layout, truth that matches the pictures and sound."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import wave
from dataclasses import replace
from pathlib import Path

import av
import cv2
import dlib
import numpy as np
import pytest

from components.config import SynthConfig
from components.media import probe_audio, probe_video
from components.synth import face_model as fm
from components.synth.generate import ClipSpec, make_clip, plan_clips, synthesize_dataset
from tests.conftest import TINY

PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
REPO = Path(__file__).resolve().parents[1]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_is_meads_with_audio_and_sidecar(tiny_dataset):
    videos = sorted(tiny_dataset.glob("*/video/front/*/level_*/*.mp4"))
    assert len(videos) == len(plan_clips(TINY)) == 9
    meta = json.loads((tiny_dataset / "dataset.json").read_text())
    assert meta["complete"] and meta["n_clips"] == 9
    for video in videos:
        identity, _, _, emotion, level, name = video.relative_to(tiny_dataset).parts
        wav = tiny_dataset / identity / "audio" / emotion / level / name.replace(".mp4", ".wav")
        sidecar = tiny_dataset / identity / "sidecar" / emotion / level / name.replace(".mp4",
                                                                                        ".npz")
        assert emotion != "neutral" or level == "level_1"
        info, audio = probe_video(video), probe_audio(wav)
        assert info.problem is None and info.fps == 25 and (info.width, info.height) == (128, 128)
        assert info.codec == "h264" and info.has_audio
        assert audio.sample_rate == 16000 and audio.channels == 1 and audio.dbfs > -30
        assert abs(audio.duration_s - info.duration_s) < 0.05
        truth = np.load(sidecar, allow_pickle=False)
        assert truth["landmarks"].shape == (info.n_frames, 68, 2)
        assert truth["pose"].shape == (info.n_frames, 3)
        assert truth["expression"].shape == (info.n_frames, len(fm.CONTROLS))
        assert str(truth["emotion"]) == emotion and str(truth["identity"]) == identity


def test_reruns_write_identical_bytes(tiny_dataset, tmp_path):
    spec = ClipSpec(identity=1, emotion="happy", level=3, sentence=0)
    video = make_clip(spec, TINY, tmp_path)
    original = tiny_dataset / video.relative_to(tmp_path)
    assert sha(video) == sha(original)
    for kind, suffix in (("audio", ".wav"), ("sidecar", ".npz")):
        ours = next(tmp_path.glob(f"*/{kind}/happy/level_3/001{suffix}"))
        assert sha(ours) == sha(tiny_dataset / ours.relative_to(tmp_path))


def test_interrupted_run_resumes_without_touching_finished_clips(tmp_path):
    cfg = replace(TINY, n_identities=1, emotions=["happy", "sad"])
    root = tmp_path / "d"
    synthesize_dataset(cfg, root)
    videos = sorted(root.rglob("*.mp4"))
    kept, lost = videos
    kept_mtime, lost_hash = kept.stat().st_mtime_ns, sha(lost)
    lost.unlink()  # as if killed before this clip's rename
    (lost.parent / ".001.mp4.tmp123").write_bytes(b"half-written")
    synthesize_dataset(cfg, root)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert sha(lost) == lost_hash
    assert not list(root.rglob(".*.tmp*"))


def test_mouth_follows_the_speech(tiny_dataset):
    """The inner-lip gap tracks the loudness of the audio, frame by frame."""
    for sidecar in tiny_dataset.glob("*/sidecar/*/level_*/*.npz"):
        truth = np.load(sidecar)
        wav = sidecar.parents[3] / "audio" / sidecar.relative_to(sidecar.parents[2]).with_suffix(
            ".wav")
        with wave.open(str(wav)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768
        lm = truth["landmarks"]
        gap = np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1)
        hop = 16000 // 25
        rms = np.array([np.sqrt(np.mean(pcm[i * hop:(i + 1) * hop] ** 2) + 1e-12)
                        for i in range(len(gap))])
        assert np.corrcoef(gap, rms)[0, 1] > 0.6, sidecar


def test_emotion_shows_in_expression_not_in_trivial_cues(tiny_dataset):
    """Happy lifts the mouth corners, sad drops them; the frame's corners (background) do not
    depend on the emotion."""
    corner = fm.CONTROLS.index("lip_corner_up")
    for identity in {p.parts[-1] for p in tiny_dataset.iterdir() if p.is_dir()}:
        mean = {e: np.load(next(tiny_dataset.glob(f"{identity}/sidecar/{e}/*/*.npz")))[
            "expression"][:, corner].mean() for e in ("happy", "neutral", "sad")}
        assert mean["happy"] > mean["neutral"] + 0.2 > mean["sad"] + 0.4
        firsts = []
        for emotion in ("happy", "sad"):
            video = next(tiny_dataset.glob(f"{identity}/video/front/{emotion}/*/*.mp4"))
            with av.open(str(video)) as c:
                firsts.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
        np.testing.assert_allclose(firsts[0][:8, :8], firsts[1][:8, :8], atol=6)


@pytest.mark.parametrize("stride", [7])
def test_a_real_landmark_detector_finds_the_faces(tiny_dataset, stride):
    """dlib's HOG detector finds the drawn faces and its 68 points land near the truth."""
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(PREDICTOR)
    found = total = 0
    errors = []
    for video in sorted(tiny_dataset.glob("*/video/front/*/*/*.mp4")):
        sidecar = str(video).replace("/video/front/", "/sidecar/").replace(".mp4", ".npz")
        truth = np.load(sidecar)["landmarks"]
        with av.open(str(video)) as c:
            for t, frame in enumerate(c.decode(video=0)):
                if t % stride:
                    continue
                img = frame.to_ndarray(format="rgb24")
                total += 1
                boxes = detector(img, 1)
                if boxes:
                    found += 1
                    shape = predictor(img, boxes[0])
                    pts = np.array([[p.x, p.y] for p in shape.parts()])
                    errors.append(np.linalg.norm(pts - truth[t], axis=1).mean() / 64)
    assert found / total >= 0.95, f"detection rate {found}/{total}"
    assert np.mean(errors) < 0.06  # mean point error under 6% of the face width


def test_bad_synth_params_are_rejected():
    with pytest.raises(ValueError, match="unknown emotions"):
        SynthConfig(emotions=["joyful"])
    with pytest.raises(ValueError, match="even"):
        SynthConfig(resolution=127)


SYNTH_IN_A_SUBPROCESS = """
import json, sys
import cv2
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
from components.config import SynthConfig
from components.synth.generate import synthesize_dataset
cfg = SynthConfig(n_identities=2, emotions=["happy"], levels=[3], n_sentences=1, workers=2)
synthesize_dataset(cfg, sys.argv[1])
print(json.dumps({"numpy": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
                  "opencv": cv2.getCPUFeaturesLine()}))
"""

# ffmpeg as on a CPU without SIMD for x264 (which detects the CPU itself, ignoring -cpuflags)
FFMPEG_WITHOUT_X264_ASM = """#!{python}
import os, sys
args = sys.argv[1:]
if "-x264-params" in args:
    args[args.index("-x264-params") + 1] += ":asm=0"
elif "libx264" in args:
    args[args.index("libx264") + 1:args.index("libx264") + 1] = ["-x264-params", "asm=0"]
os.execv({ffmpeg!r}, [{ffmpeg!r}, *args])
"""
RESTRICTING = ("NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE", "OPENBLAS_CORETYPE")


def _dispatched_opencv(features_line: str) -> list[str]:
    """OpenCV's run-time dispatched CPU features that are active ('*NAME', not '*NAME?')."""
    return [f[1:] for f in features_line.split() if f.startswith("*") and not f.endswith("?")]


def _synth_md5s(root: Path, env: dict[str, str]) -> tuple[dict[str, str], dict]:
    run = subprocess.run([sys.executable, "-c", SYNTH_IN_A_SUBPROCESS, str(root)], cwd=REPO,
                         env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    md5s = {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
    return md5s, json.loads(run.stdout.strip().splitlines()[-1])


def test_bytes_do_not_depend_on_the_cpus_simd(tmp_path):
    """The same files, bit for bit, when numpy, OpenCV, OpenBLAS and x264 are kept off the SIMD
    code they pick for this CPU (as on a machine with other instruction sets), for a user who never
    ran espeak-ng before."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    default_env = {k: v for k, v in os.environ.items() if k not in RESTRICTING}
    wrapper = tmp_path / "bin" / "ffmpeg"
    wrapper.parent.mkdir()
    wrapper.write_text(FFMPEG_WITHOUT_X264_ASM.format(python=sys.executable,
                                                      ffmpeg=shutil.which("ffmpeg")))
    wrapper.chmod(0o755)
    numpy_simd = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    opencv_simd = _dispatched_opencv(cv2.getCPUFeaturesLine())
    fresh_home = tmp_path / "home"  # and as on a fresh machine: libpulse's first run (see below)
    fresh_home.mkdir()
    restricted_env = {k: v for k, v in default_env.items() if not k.startswith(("XDG_", "PULSE"))}
    restricted_env |= {
        "HOME": str(fresh_home),
        "NPY_DISABLE_CPU_FEATURES": " ".join(numpy_simd),
        "OPENCV_CPU_DISABLE": ",".join(opencv_simd),
        "OPENBLAS_CORETYPE": "Prescott",
        "PATH": f"{wrapper.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    default, default_cpu = _synth_md5s(tmp_path / "default", default_env)
    restricted, restricted_cpu = _synth_md5s(tmp_path / "restricted", restricted_env)
    assert default_cpu["numpy"] == numpy_simd  # this machine's kernels, then none of them
    assert _dispatched_opencv(default_cpu["opencv"]) == opencv_simd
    assert restricted_cpu["numpy"] == [] and _dispatched_opencv(restricted_cpu["opencv"]) == []
    assert len(default) == 2 * 3 + 1  # two clips (mp4, wav, npz) and dataset.json
    assert restricted == default, [k for k in default if restricted.get(k) != default[k]]


def _speech_bytes(variant: str, home: Path, monkeypatch) -> bytes:
    """One sentence from espeak-ng with `home` as the user's home (pulse's config lives there)."""
    from components.synth.speech import SENTENCES, Voice, speak

    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH"):
        monkeypatch.delenv(name, raising=False)
    samples = speak(SENTENCES[0], Voice("en-us", variant, 60, 160), 1.0, 0, 1.0, 1.0, 16000)
    return samples.tobytes()


def test_speech_does_not_depend_on_a_first_run_on_the_machine(tmp_path, monkeypatch):
    """libpulse (loaded by espeak-ng) draws from rand() the first time it runs for a user, the
    way a fresh machine runs it; voices whose breath noise also comes from rand() then change.
    The generator's voices draw no random numbers, so a first run gives the same samples."""
    from components.synth.speech import FEMALE_VARIANTS, MALE_VARIANTS

    warm = tmp_path / "warm"
    warm.mkdir()
    _speech_bytes("m1", warm, monkeypatch)  # pulse's first run for this home happens here
    for variant in ("f3", *FEMALE_VARIANTS, *MALE_VARIANTS):
        fresh = tmp_path / f"fresh-{variant}"
        fresh.mkdir()
        first_run = _speech_bytes(variant, fresh, monkeypatch)
        assert (fresh / ".config" / "pulse").is_dir()  # the first-run path really ran
        same = first_run == _speech_bytes(variant, warm, monkeypatch)
        assert same == (variant != "f3"), variant  # f3 (breath noise) shows what it would do
