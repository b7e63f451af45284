"""The denoiser's parts on tiny configs: what each stage trains, conditions that are absent when
dropped, the temporal limit, save/load without pickles, the sampler."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from components.config import (
    DiffusionConfig,
    MotionConfig,
    SamplingConfig,
    UNetConfig,
    VaeConfig,
)
from components.diffusion.frames import Clip
from components.diffusion.models.build import add_motion_modules, motion_config, new_denoiser
from components.diffusion.models.denoiser import Denoiser
from components.diffusion.train.fit import DenoisingObjective
from components.diffusion.train.recipes import pick_sample, set_trainable
from components.errors import SvpError
from components.evaluation.metrics import correlation, paired_difference
from components.evaluation.stage_checks import fixed_items, mouth_follows_audio
from components.training.registry import load_pretrained, save_pretrained

TINY = DiffusionConfig(
    resolution=32, vae=VaeConfig(block_out_channels=[8, 16, 16], norm_num_groups=8),
    unet=UNetConfig(block_out_channels=[16, 32], attention_head_dim=2, cross_attention_dim=32,
                    norm_num_groups=8),
    motion=MotionConfig(num_attention_heads=2, norm_num_groups=8, max_seq_length=8),
    kps_guider_channels=[8, 8, 16], sampling=SamplingConfig(steps=2, guidance=2.0, window=8,
                                                            overlap=2))


def conditions(b: int, frames: int, style: bool = True, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.randn(b, 4, frames, 8, 8, generator=g),
            "reference": torch.randn(b, 4, 8, 8, generator=g),
            "kps": torch.rand(b, frames, 3, 32, 32, generator=g),
            "audio": torch.randn(b, frames, 5, 10, 384, generator=g),
            "style": torch.randn(b, 64, generator=g) if style else None}


def denoiser_at(stage: int, reference_input: bool = False) -> Denoiser:
    torch.manual_seed(0)
    denoiser = new_denoiser(replace(TINY, reference_input=reference_input))
    if stage > 1:
        add_motion_modules(denoiser, TINY)
    for p in denoiser.parameters():  # as after training: no zero-initialised output left
        p.data.add_(0.01 * torch.randn_like(p))
    return denoiser


def paper_trains(stage: int, name: str) -> bool:
    """The paper's split, written out independently of the recipe (`reference_in`, the
    reference latents' input conv, is this project's and trains with conv_in in stage 1)."""
    spatial_cross = "motion_modules" not in name and (
        ".attn2." in name or (".norm2." in name and ".transformer_blocks." in name))
    if stage == 1:
        return (name.startswith(("reference_net.", "kps_guider.", "reference_in.")) or
                (name.startswith("unet.") and not spatial_cross))
    if stage == 2:
        return name.startswith("audio_projection.") or "motion_modules" in name or (
            name.startswith("unet.") and spatial_cross and ".processor.style." not in name)
    return name.startswith("style_projection.") or ".attn2.processor.style." in name


@pytest.mark.parametrize("reference_input", [False, True])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_stage_trains_exactly_the_papers_parameters(stage, reference_input):
    denoiser = denoiser_at(stage, reference_input)
    trained = set_trainable(denoiser, stage)
    names = {n for n, p in denoiser.named_parameters() if p.requires_grad}
    assert len(names) == len(trained)
    unread = {n for n in names ^ {n for n, _ in denoiser.named_parameters()
                                  if paper_trains(stage, n)}}
    # the one allowed difference: ReferenceNet layers after the last self-attention it keeps
    assert all(n.startswith("reference_net.") for n in unread)
    assert stage != 1 or any("conv_out" in n for n in unread)
    before = {n: p.detach().clone() for n, p in denoiser.named_parameters()}
    c = conditions(2, 1 if stage == 1 else 4)
    objective = DenoisingObjective(denoiser, reference_trains=stage == 1)
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    out = objective(c["latents"], torch.tensor([10, 500]), c["reference"], c["kps"],
                    c["audio"] if stage > 1 else None, c["style"] if stage == 3 else None,
                    torch.tensor([True, True]))
    out.pow(2).mean().backward()
    with_grad = {n for n, p in denoiser.named_parameters() if p.grad is not None}
    assert with_grad == names
    optimizer.step()
    for name, param in denoiser.named_parameters():
        if name in names:
            assert not torch.equal(param, before[name]), f"{name} did not train"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("reference_input", [False, True])
def test_dropped_conditions_are_absent(reference_input):
    denoiser = denoiser_at(3, reference_input).eval()
    c, other = conditions(2, 4), conditions(2, 4, seed=2)
    other["latents"] = c["latents"]
    t, keep = torch.tensor([300, 300]), torch.tensor([False, True])
    with torch.no_grad():
        outs = [denoiser(x["latents"], t, denoiser.encode_reference(x["reference"]), x["kps"],
                         x["audio"], x["style"], keep) for x in (c, other)]
        bare = denoiser(c["latents"], t, denoiser.encode_reference(c["reference"]),
                        c["kps"], None, None, keep)
    torch.testing.assert_close(outs[0][0], outs[1][0])  # dropped: no condition reaches it
    assert not torch.allclose(outs[0][1], outs[1][1], atol=1e-4)  # kept: they all matter
    torch.testing.assert_close(outs[0][0], bare[0])


def test_style_scale_zero_is_style_attention_off():
    denoiser = denoiser_at(3).eval()
    c = conditions(1, 2)
    with torch.no_grad():
        bank = denoiser.encode_reference(c["reference"])
        off = denoiser(c["latents"], torch.tensor([50]), bank, c["kps"], c["audio"], c["style"],
                       style_scale=0.0)
        none = denoiser(c["latents"], torch.tensor([50]), bank, c["kps"], c["audio"], None)
        on = denoiser(c["latents"], torch.tensor([50]), bank, c["kps"], c["audio"], c["style"])
    torch.testing.assert_close(off, none)
    assert not torch.allclose(on, none, atol=1e-4)


def test_frames_past_the_motion_modules_limit_are_a_one_line_error():
    denoiser = denoiser_at(2)
    c = conditions(1, 9)
    with pytest.raises(SvpError, match=r"9 frames exceed the motion module's limit of 8 "
                       r"\(diffusion.motion.max_seq_length\)"):
        denoiser(c["latents"], torch.tensor([1]), denoiser.encode_reference(c["reference"]),
                 c["kps"], c["audio"])


def test_image_model_becomes_the_video_model_unchanged_at_first():
    """Stage 2 inserts new motion modules; their zero outputs leave every frame as it was."""
    torch.manual_seed(0)
    denoiser = new_denoiser(TINY).eval()
    c = conditions(1, 4, style=False)
    t = torch.tensor([400])
    with torch.no_grad():
        image = denoiser(c["latents"], t, denoiser.encode_reference(c["reference"]), c["kps"],
                         c["audio"])
        denoiser.add_motion(motion_config(TINY))
        video = denoiser(c["latents"], t, denoiser.encode_reference(c["reference"]), c["kps"],
                         c["audio"])
    torch.testing.assert_close(video, image, rtol=1e-4, atol=1e-5)
    assert denoiser.config.motion_config["motion_max_seq_length"] == 8


def test_saved_denoiser_loads_back_without_pickles(tmp_path, monkeypatch):
    import pickle

    denoiser = denoiser_at(3, reference_input=True).eval()
    denoiser.save_pretrained(tmp_path)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load"))
    loaded = load_pretrained(Denoiser, tmp_path)
    c = conditions(1, 2)
    with torch.no_grad():
        a, b = (m(c["latents"], torch.tensor([5]), m.encode_reference(c["reference"]), c["kps"],
                  c["audio"], c["style"]) for m in (denoiser, loaded))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json",
                                                     "diffusion_pytorch_model.safetensors"}


def test_reference_input_starts_silent_and_is_conv_in_over_more_channels():
    """A new denoiser is the same function with and without the reference input (its conv is
    zero); trained, the conv is conv_in over the reference's channels appended (SVD's concat)."""
    torch.manual_seed(0)
    with_input = new_denoiser(replace(TINY, reference_input=True)).eval()
    torch.manual_seed(0)
    without = new_denoiser(TINY).eval()
    assert without.reference_in is None
    c = conditions(1, 1, style=False)
    t = torch.tensor([400])
    with torch.no_grad():
        a, b = (m(c["latents"], t, m.encode_reference(c["reference"]), c["kps"])
                for m in (with_input, without))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        with_input.reference_in.weight.normal_()
        conv_in = with_input.unet.conv_in
        concat = torch.nn.Conv2d(8, conv_in.out_channels, 3, padding=1)
        concat.weight.copy_(torch.cat([conv_in.weight, with_input.reference_in.weight], 1))
        concat.bias.copy_(conv_in.bias)
        x = c["latents"][:, :, 0]
        torch.testing.assert_close(conv_in(x) + with_input.reference_in(c["reference"]),
                                   concat(torch.cat([x, c["reference"]], 1)))


def test_the_reference_inputs_hole_keeps_the_inner_face_out(tmp_path):
    """With `reference_input_hole`, what the reference latents hold inside the box (the inner
    face: its expression) no longer reaches the input; outside it (background, hair, clothes)
    still does, and a saved denoiser keeps its hole."""
    torch.manual_seed(0)
    hole = [0.25, 0.25, 0.75, 0.75]  # the middle 4x4 of 8x8 latent cells
    denoiser = new_denoiser(replace(TINY, reference_input=True,
                                    reference_input_hole=hole)).eval()
    denoiser.reference_in.weight.data.normal_()
    c = conditions(1, 1, style=False)
    keep = torch.ones(1, dtype=torch.bool)

    def features(reference: torch.Tensor) -> torch.Tensor:
        return denoiser._input_features(c["kps"], {"reference_latents": reference}, keep,
                                        torch.float32)

    inside, outside = c["reference"].clone(), c["reference"].clone()
    inside[..., 2:6, 2:6] += 5.0
    outside[..., 0, 0] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(features(inside), features(c["reference"]), rtol=0, atol=0)
        assert not torch.equal(features(outside), features(c["reference"]))
    denoiser.save_pretrained(tmp_path)
    assert load_pretrained(Denoiser, tmp_path).config.reference_input_hole == hole


@pytest.mark.parametrize("hole, reference_input", [([0.5, 0.2, 0.4, 0.8], True),
                                                   ([0.2, 0.2, 1.2, 0.8], True),
                                                   ([0.2, 0.2, 0.8], True),
                                                   ([0.2, 0.2, 0.8, 0.8], False)])
def test_a_reference_input_hole_out_of_the_frame_or_without_the_input_is_refused(
        hole, reference_input):
    with pytest.raises(ValueError, match="reference_input"):
        replace(TINY, reference_input=reference_input, reference_input_hole=hole)


def test_a_denoiser_saved_before_the_reference_input_loads_as_it_was(tmp_path):
    denoiser = new_denoiser(TINY).eval()
    denoiser.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["reference_input"]  # what a generator saved before the param holds
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_pretrained(Denoiser, tmp_path)
    assert loaded.reference_in is None
    c = conditions(1, 1, style=False)
    with torch.no_grad():
        a, b = (m(c["latents"], torch.tensor([5]), m.encode_reference(c["reference"]), c["kps"])
                for m in (denoiser, loaded))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_audio_normaliser_standardises_and_travels_with_the_weights(tmp_path):
    denoiser = denoiser_at(2)
    states = 3 + 0.1 * torch.randn(40, 5, 2, 384, generator=torch.Generator().manual_seed(0))
    denoiser.audio_projection.fit_normaliser(states)
    projection = denoiser.audio_projection
    standard = (states.movedim(1, 0).flatten(1, -2) - projection.feature_mean[:, None]) \
        / projection.feature_std[:, None]
    assert standard.mean().abs() < 1e-4 and (standard.std(1) - 1).abs().max() < 1e-3
    save_pretrained(denoiser, tmp_path / "d")
    loaded = load_pretrained(Denoiser, tmp_path / "d")
    torch.testing.assert_close(loaded.audio_projection.feature_std, projection.feature_std)


def test_paired_difference_is_a_gap_over_windows_with_its_standard_error():
    a = np.array([2.0, 2.0, 3.0, 3.0, 1.0, np.nan])  # three windows of two frames
    b = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    mean, se = paired_difference(a, b, frames=2)
    assert mean == pytest.approx(1.0)  # window gaps 1, 2, 0
    assert se == pytest.approx(1.0 / np.sqrt(3))
    assert np.isnan(paired_difference(a[:2], b[:2], frames=2)[1])  # one window: no spread


def test_stage2_needs_a_gap_beyond_noise_to_pass():
    measured = {"m_lmd_own": 1.21, "m_lmd_other": 1.26, "m_lmd_repeated": 2.21,
                "m_lmd_own_minus_other": -0.044, "m_lmd_own_minus_other_se": 0.016}
    assert mouth_follows_audio(measured)
    assert not mouth_follows_audio(measured | {"m_lmd_own_minus_other_se": 0.03})  # noise
    assert not mouth_follows_audio(measured | {"m_lmd_own_minus_other_se": float("nan")})
    assert not mouth_follows_audio(measured | {"m_lmd_repeated": 1.2})  # a still face is better


def clip_with_opening(sample_id: str, identity: str, opening: np.ndarray) -> Clip:
    landmarks = np.zeros((len(opening), 68, 2), np.float32)
    landmarks[:, 66, 1] = opening
    n = len(opening)
    return Clip(sample_id, identity, "happy", f"{identity}/happy", np.zeros((n, 4, 2, 2)),
                np.zeros((n, 8, 2)), landmarks, np.zeros((n, 5, 2, 4)), [])


def test_stage2_other_speech_is_another_sentence_of_the_same_speaker():
    t = np.arange(16)
    speech = np.where(t % 4 < 2, 3.0, 0.0)  # the target's mouth: open, open, shut, shut, ...
    clips = [clip_with_opening("A_1", "A", speech),
             clip_with_opening("A_2_same_words", "A", speech + 0.1),  # the same sentence
             clip_with_opening("A_3_other_words", "A", 3.0 - speech),
             clip_with_opening("B_1", "B", 3.0 - speech)]  # another speaker: not chosen
    item = fixed_items(2, clips, 1, 8)[0]
    assert (item.target, item.other_speech) == (0, 2)
    assert correlation(speech, 3.0 - speech) == pytest.approx(-1.0)
    assert np.isnan(correlation(speech, np.ones(16)))  # a still mouth has no correlation


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_stage3_references_another_emotion_or_with_a_share_another_frame_of_its_own_clip(share):
    """Reconstruction references a frame of the target's own clip, so a share of stage 3's
    samples does too; the rest follow the paper's cross-emotion training."""
    speech = np.zeros(16)
    clips = [clip_with_opening(f"{who}_{emotion}", who, speech) for who in "AB"
             for emotion in ("happy", "sad", "angry")]
    clips = [replace(c, group=c.sample_id) for c in clips]
    rng = np.random.default_rng(0)
    picks = [pick_sample(3, clips, 1, rng, own_reference_share=share) for _ in range(400)]
    own = [p for p in picks if p.reference == p.target]
    assert all(clips[p.reference].identity == clips[p.target].identity for p in picks)
    assert all(p.reference_frame != p.start for p in own)  # never the target frame itself
    assert len(own) / len(picks) == pytest.approx(share, abs=0.06)


def test_stages_2_and_3_train_on_the_window_the_generator_samples_with():
    """One setting, `diffusion.sampling.window`: stage 2 trained 8-frame windows while generation
    ran 16, so the temporal attention never saw the length it ran at."""
    from components.config import load_params

    params = load_params()
    window = params.diffusion.sampling.window
    assert window == 16
    assert params.train_stage1.frames(params.diffusion) == 1
    assert params.train_stage2.frames(params.diffusion) == window
    assert params.train_stage3.frames(params.diffusion) == window


@pytest.mark.parametrize("fps, frames", [(25, 5), (50, 10), (12.5, 2)])
def test_the_audio_window_follows_the_features_frame_rate(fps, frames):
    """0.2 s of Whisper states per frame at the features' fps (it was fixed at 25)."""
    denoiser = new_denoiser(TINY, fps=fps)
    assert denoiser.audio_frames == frames
    assert denoiser.config.audio_config["window_steps"] == 2 * frames
