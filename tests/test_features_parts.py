"""The parts of feature extraction: Head-Kps, crops, landmark backends, Whisper, expression."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from scipy.io import savemat

from components.errors import SvpError
from components.face_template import TEMPLATE_2D
from components.features import audio as wf
from components.features.crop import crop_frame, smooth_boxes, to_crop
from components.features.expression import (
    ExpressionBasis,
    fit_basis,
    head_pose,
    identity_mean_shape,
    load_3dmm,
)
from components.features.head_kps import LEFT, RIGHT, head_kps, render_head_kps
from components.features.landmarks import (
    FAN_WEIGHTS,
    S3FD_WEIGHTS,
    DlibLandmarks,
    FaceAlignmentLandmarks,
)
from components.media import decode_audio, decode_video

PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"


def clip(tiny_dataset, emotion="happy", identity=0):
    video = sorted(tiny_dataset.glob(f"*/video/front/{emotion}/*/*.mp4"))[identity]
    sidecar = str(video).replace("/video/front/", "/sidecar/").replace(".mp4", ".npz")
    audio = str(video).replace("/video/front/", "/audio/").replace(".mp4", ".wav")
    return video, np.load(sidecar), audio


def test_head_kps_points_and_rendering():
    lm = TEMPLATE_2D * 40 + 32
    kps = head_kps(lm)
    assert kps.shape == (8, 2)
    np.testing.assert_allclose(kps[0], lm[0])
    np.testing.assert_allclose(kps[2], lm[36:42].mean(0), rtol=1e-6)
    image = render_head_kps(kps, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    left = np.argwhere((image == LEFT).all(-1))[:, 1].mean()
    right = np.argwhere((image == RIGHT).all(-1))[:, 1].mean()
    assert left < 32 < right  # left-side points in the left colour, on the left
    assert (image.sum(-1) == 0).mean() > 0.8  # drawn on black
    assert render_head_kps(np.full((8, 2), np.nan), 64).sum() == 0


def test_crop_boxes_are_smooth_and_fill_missing_frames():
    rng = np.random.default_rng(0)
    lm = TEMPLATE_2D[None] * 50 + 64 + rng.normal(0, 1.5, (30, 68, 2))
    lm[10:13] = np.nan
    boxes, raw = smooth_boxes(lm, 1.6, 7), smooth_boxes(lm, 1.6, 1)
    assert np.isfinite(boxes).all()
    assert np.diff(boxes, axis=0).std(0).max() < np.diff(raw, axis=0).std(0).min() / 2
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[60:68, 60:68] = 255
    crop = crop_frame(frame, np.array([32, 32, 64], np.float32), 32)
    assert crop.shape == (32, 32, 3) and crop[14:18, 14:18].min() > 200
    np.testing.assert_allclose(to_crop(np.array([[64.0, 64.0]]), np.array([32, 32, 64]), 32),
                               [[16, 16]])


def test_dlib_backend_matches_the_truth(tiny_dataset):
    video, truth, _ = clip(tiny_dataset)
    frames, _ = decode_video(video)
    found = DlibLandmarks(PREDICTOR)(frames[:20])
    error = np.linalg.norm(found - truth["landmarks"][:20], axis=-1).mean() / 64
    assert np.isfinite(found).all() and error < 0.06
    assert np.isnan(DlibLandmarks(PREDICTOR)(np.zeros((2, 128, 128, 3), np.uint8))).all()
    with pytest.raises(SvpError, match="predictor not found"):
        DlibLandmarks("/nope.dat")


def test_dlib_on_worker_processes_gives_the_numbers_of_one_process(tiny_dataset):
    """`svp evaluate`'s landmarks and CSIM embeddings on two processes: the same values, in
    the frames' order, as in this process (a frame without a face among them)."""
    from components.evaluation.dlib_workers import DlibWorkers
    from components.evaluation.identity import FaceIdentity
    from components.evaluation.metrics import FaceLandmarks

    video, _, _ = clip(tiny_dataset)
    frames, _ = decode_video(video)
    frames = np.concatenate([frames[:5], np.zeros_like(frames[:1]), frames[5:9]])
    alone, identity = FaceLandmarks(PREDICTOR), FaceIdentity()
    landmarks = alone(frames)
    embeddings = identity(frames, landmarks)
    workers = DlibWorkers(2, str(identity.path))
    try:
        np.testing.assert_array_equal(FaceLandmarks(PREDICTOR, workers)(frames), landmarks)
        np.testing.assert_array_equal(FaceIdentity(workers=workers)(frames, landmarks),
                                      embeddings)
    finally:
        workers.close()
    assert np.isfinite(embeddings).all()  # the faceless frame reuses the previous frame's box


def test_face_alignment_backend_loads_local_weights_only(tiny_dataset, tmp_path):
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    with pytest.raises(SvpError, match=FAN_WEIGHTS):
        FaceAlignmentLandmarks(tmp_path, PREDICTOR)
    (tmp_path / "checkpoints").mkdir()
    torch.save(FAN(4).state_dict(), tmp_path / "checkpoints" / FAN_WEIGHTS)
    torch.save(s3fd().state_dict(), tmp_path / "checkpoints" / S3FD_WEIGHTS)
    video, _, _ = clip(tiny_dataset)
    frames, _ = decode_video(video)
    found = FaceAlignmentLandmarks(tmp_path, PREDICTOR)(frames[:2])
    assert found.shape == (2, 68, 2) and np.isfinite(found).all()  # random weights: any points


def test_whisper_features_shapes_and_the_unpadded_path(tiny_dataset):
    _, _, audio = clip(tiny_dataset)
    samples, _ = decode_audio(audio, wf.SAMPLE_RATE)
    states = wf.encode_clip(samples)
    steps = len(samples) * wf.STEPS_PER_SECOND // wf.SAMPLE_RATE
    assert states.shape == (wf.N_HIDDEN, steps, wf.WIDTH) and np.isfinite(states).all()
    padded = wf.encode_clip_padded(samples)
    assert padded.shape == states.shape
    cosine = (states * padded).sum(-1) / np.linalg.norm(states, axis=-1) / np.linalg.norm(
        padded, axis=-1)
    assert cosine[0].mean() > 0.999  # the convolutional front end sees the same audio
    frames = wf.per_frame(states, 50, 25)
    assert frames.shape == (50, wf.N_HIDDEN, 2, wf.WIDTH)
    np.testing.assert_array_equal(frames[3, :, 1], states[:, 7])
    window = wf.audio_window(frames, 0)
    assert window.shape == (wf.N_HIDDEN, 10, wf.WIDTH)  # 0.2 s = 10 steps at 50 Hz


def test_states_relative_to_silence_remove_the_position_table(tiny_dataset):
    _, _, audio = clip(tiny_dataset)
    samples, _ = decode_audio(audio, wf.SAMPLE_RATE)
    n = len(samples) * 25 // wf.SAMPLE_RATE
    samples = samples[: n * wf.SAMPLE_RATE // 25]
    speech = wf.per_frame(wf.encode_clip(samples), n, 25)
    silence = wf.per_frame(wf.encode_clip(np.zeros_like(samples)), n, 25)
    np.testing.assert_allclose(wf.relative_to_silence(silence), 0, atol=1e-4)
    relative = wf.relative_to_silence(speech)
    np.testing.assert_allclose(relative, speech - silence, atol=1e-4)
    assert np.abs(relative).mean() > 0.01  # the sound is left


def test_whisper_loads_a_local_checkpoint(tiny_dataset, tmp_path):
    import whisper
    from whisper.model import ModelDimensions

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6,
                           n_audio_layer=4, n_vocab=100, n_text_ctx=8, n_text_state=384,
                           n_text_head=6, n_text_layer=1)
    torch.manual_seed(1)
    model = whisper.model.Whisper(dims)
    path = tmp_path / "tiny.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    _, _, audio = clip(tiny_dataset)
    samples, _ = decode_audio(audio, wf.SAMPLE_RATE)
    ours = wf.encode_clip(samples, str(path))
    assert not np.allclose(ours, wf.encode_clip(samples))  # not the stand-in
    mel = whisper.log_mel_spectrogram(torch.from_numpy(samples))
    reference = wf._hidden_states(model.encoder.eval(), mel[:, : mel.shape[1] // 2 * 2])
    np.testing.assert_allclose(ours, reference.detach().numpy(), atol=1e-5)
    with pytest.raises(SvpError, match="checkpoint not found"):
        wf.load_encoder(str(tmp_path / "missing.pt"))


def test_landmark_expression_basis_separates_emotions(tiny_dataset, tmp_path):
    clips = []
    for sidecar in sorted(tiny_dataset.glob("*/sidecar/*/*/*.npz")):
        truth = np.load(sidecar)
        pose = head_pose(truth["landmarks"], (128, 128))
        clips.append((str(truth["identity"]), str(truth["emotion"]), truth["landmarks"], pose))
    assert np.abs(clips[0][3][:, 0]).max() < 30  # plausible yaw in degrees
    basis = fit_basis([(i, lm, p) for i, _, lm, p in clips], n=8)
    basis.save(tmp_path / "basis.npz")
    loaded = ExpressionBasis.load(tmp_path / "basis.npz")
    np.testing.assert_array_equal(loaded.components, basis.components)
    means = {}
    for identity, _, lm, _ in clips:
        means.setdefault(identity, []).append(lm)
    means = {i: identity_mean_shape(v, basis.mean_shape) for i, v in means.items()}
    per_clip = {(i, e): loaded.coefficients(lm, p, means[i]).mean(0) * loaded.scales
                for i, e, lm, p in clips}
    # the happy-minus-sad direction in (unwhitened) coefficient space agrees across identities
    shifts = [per_clip[(i, "happy")] - per_clip[(i, "sad")] for i in sorted(means)]
    for a in range(len(shifts)):
        for b in range(a + 1, len(shifts)):
            cosine = shifts[a] @ shifts[b] / np.linalg.norm(shifts[a]) / np.linalg.norm(shifts[b])
            assert cosine > 0.5


def test_3dmm_files(tmp_path):
    savemat(tmp_path / "a.mat", {"coeff": np.arange(257 * 3, dtype=np.float32).reshape(3, 257)})
    np.save(tmp_path / "clipb.npy", np.ones((5, 64), np.float32))
    a = load_3dmm(tmp_path, "a", "x/a.mp4")
    assert a.shape == (3, 64) and a[0, 0] == 80
    assert load_3dmm(tmp_path, "M001_b", "x/clipb.mp4").shape == (5, 64)
    np.save(tmp_path / "bad.npy", np.ones((5, 10), np.float32))
    with pytest.raises(SvpError, match="expected"):
        load_3dmm(tmp_path, "bad", "bad.mp4")
    with pytest.raises(SvpError, match="no 3DMM file"):
        load_3dmm(tmp_path, "none", "none.mp4")
