"""The procedural dataset: real media, MEAD's layout, truth that matches the pictures and sound."""

from __future__ import annotations

import hashlib
import json
import wave
from dataclasses import replace

import av
import dlib
import numpy as np
import pytest

from components.config import SynthConfig
from components.media import probe_audio, probe_video
from components.synth import face_model as fm
from components.synth.generate import ClipSpec, make_clip, plan_clips, synthesize_dataset
from tests.conftest import TINY

PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"


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
