"""The generator's stages end to end on tiny configs, through the CLI as DVC runs them: VAE,
latents, the three denoiser stages with their checks and registry versions, SIGKILL and resume,
two Ray workers, and the full profile's loading of SD and AnimateDiff files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from components.config import DiffusionConfig
from components.evaluation.stage_checks import (
    follows_head_kps,
    mouth_follows_audio,
    style_moves_expression,
)
from tests.conftest import DIFFUSION, STAGE, SVP, svp, with_params

WEIGHTS = "diffusion_pytorch_model.safetensors"
CHECKS = {1: follows_head_kps, 2: mouth_follows_audio, 3: style_moves_expression}
pytestmark = pytest.mark.slow

def test_the_stages_write_their_checks_pictures_and_versions(trained):
    vae = json.loads((trained / "reports/vae/metrics.json").read_text())
    assert vae["reconstruction_psnr"] > 5 and vae["scaling_factor"] > 0
    index = __import__("pyarrow.parquet").parquet.read_table(
        trained / "data/latents/index.parquet").to_pandas()
    assert sorted(index["split"].unique()) == ["procedural", "test", "train"]
    expected = {1: "follows_head_kps", 2: "mouth_follows_audio", 3: "style_moves_expression"}
    for stage, check in expected.items():
        report = trained / f"reports/stage{stage}"
        metrics = json.loads((report / "metrics.json").read_text())
        assert metrics["learned"] == {check: CHECKS[stage](metrics)}
        assert metrics["vae_reconstruction_psnr"] == vae["reconstruction_psnr"]
        assert np.isfinite(metrics["psnr"]) and 0 <= metrics["ssim"] <= 1
        assert (report / "samples.png").stat().st_size > 1000
        assert len((report / "loss.tsv").read_text().splitlines()) == STAGE["steps"] + 1
        assert (trained / f"data/denoiser_stage{stage}" / WEIGHTS).is_file()
    stage2 = json.loads((trained / "reports/stage2/metrics.json").read_text())
    assert {"m_lmd_own", "m_lmd_other", "m_lmd_repeated", "m_lmd_own_minus_other_se"} <= \
        set(stage2)
    stage3 = json.loads((trained / "reports/stage3/metrics.json").read_text())
    assert {"f_lmd_style", "f_lmd_no_style", "f_lmd_style_minus_off_se"} <= set(stage3)
    client = MlflowClient(f"sqlite:///{trained / '.svp/mlflow.db'}")
    for name in ("svp-vae", "svp-denoiser-stage1", "svp-denoiser-stage2",
                 "svp-denoiser-stage3"):
        (version,) = client.search_model_versions(f"name='{name}'")
        run = client.get_run(version.run_id)
        assert run.data.tags["svp.stage"] in ("train_vae", f"train_{name[-6:]}")
    (version,) = client.search_model_versions("name='svp-denoiser-stage1'")
    assert len(client.get_metric_history(version.run_id, "loss")) == STAGE["steps"]


def test_registered_denoiser_loads_and_runs_without_pickles(trained, monkeypatch):
    import pickle

    import cloudpickle
    import mlflow

    for module in (pickle, cloudpickle):
        for name in ("load", "loads"):
            monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load"))
    monkeypatch.chdir(trained)
    mlflow.set_tracking_uri(f"sqlite:///{trained / '.svp/mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/svp-denoiser-stage3/1")
    out = model.predict({
        "latents": np.zeros((1, 4, 2, 8, 8), np.float32), "timesteps": np.array([10.0], np.float32),
        "reference_latents": np.zeros((1, 4, 8, 8), np.float32),
        "kps": np.zeros((1, 2, 3, 32, 32), np.float32),
        "audio": np.zeros((1, 2, 5, 10, 384), np.float32),
        "style": np.zeros((1, 32), np.float32)})
    assert out.shape == (1, 4, 2, 8, 8) and np.isfinite(out).all()
    vae = mlflow.pyfunc.load_model("models:/svp-vae/1")
    assert vae.predict({"images": np.zeros((2, 32, 32, 3), np.uint8)}).shape == (2, 4, 8, 8)


def test_a_killed_stage_resumes_to_the_same_weights(trained):
    def elsewhere(params):
        params["train_stage1"].update(out_dir="data/s1_again",
                                      checkpoint_dir="data/s1_again_checkpoints",
                                      report_dir="reports/s1_again")

    path = with_params(trained, "resume.yaml", elsewhere)
    run = subprocess.Popen([SVP, "train", "stage1", "--params", str(path)], cwd=trained,
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL,
                           env=os.environ | {"SVP_STOP_AFTER_CHECKPOINT": "2"})
    _, status = os.waitpid(run.pid, os.WUNTRACED)  # blocks until it stops after step 2
    assert os.WIFSTOPPED(status)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert (trained / "data/s1_again_checkpoints/step_0000002/state.json").is_file()
    assert not (trained / "data/s1_again_checkpoints/step_0000004").exists()
    resumed = svp(trained, "train", "stage1", params=path)
    assert "resuming from" in resumed.stderr
    ours = load_file(trained / "data/s1_again" / WEIGHTS)
    reference = load_file(trained / "data/denoiser_stage1" / WEIGHTS)
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0)


def test_a_stage_trains_on_two_ray_workers(trained):
    """DDP on CPU with 2 Ray workers, in a loopback-only network namespace."""
    def two_workers(params):
        params["train_stage2"].update(workers=2, steps=2, out_dir="data/s2_ddp",
                                      checkpoint_dir="data/s2_ddp_checkpoints",
                                      report_dir="reports/s2_ddp")

    path = with_params(trained, "ddp.yaml", two_workers)
    script = f"ip link set lo up; exec {SVP} train stage2 --params {path}"
    run = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=trained,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((trained / "data/s2_ddp_checkpoints/step_0000002/state.json")
                       .read_text())
    assert state["world_size"] == 2 and len(state["history"]["loss"]) == 2


def to_animatediff(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' MotionAdapter names back to AnimateDiff's own (`mm_sd_v15_v2.ckpt`)."""
    import re

    out = {}
    for key, value in state.items():
        if key.endswith("pos_embed.pe"):
            key = key.replace("pos_embed.pe", "pos_encoder.pe")
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        for ours, theirs in ((".attn1.", ".attention_blocks.0."),
                             (".attn2.", ".attention_blocks.1."), (".norm1.", ".norms.0."),
                             (".norm2.", ".norms.1."), (".norm3.", ".ff_norm.")):
            key = key.replace(ours, theirs)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def sd_folder(trained) -> Path:
    """A tiny diffusers-format SD folder (unet/, vae/) and a motion-module file in AnimateDiff's
    format, shaped as the tiny params say."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.models.unets.unet_motion_model import MotionAdapter

    from components.diffusion.models.build import motion_config, unet_config
    from components.diffusion.models.vae import new_vae

    cfg = DiffusionConfig(**DIFFUSION)
    root = trained / "sd15"
    torch.manual_seed(3)
    UNet2DConditionModel(**unet_config(cfg)).save_pretrained(root / "unet")
    vae = new_vae(cfg)
    vae.register_to_config(scaling_factor=0.18215)
    vae.save_pretrained(root / "vae")
    adapter = MotionAdapter(**motion_config(cfg))
    for p in adapter.parameters():
        p.data.normal_(0, 0.02)
    torch.save(to_animatediff(adapter.state_dict()), root / "mm_tiny.ckpt")
    return root


def full_profile(project: Path, sd: Path, name: str, **stage2) -> Path:
    def change(params):
        params["diffusion"]["vae"]["pretrained"] = str(sd)
        params["diffusion"]["unet"]["pretrained"] = str(sd)
        params["diffusion"]["motion"]["pretrained"] = str(sd / "mm_tiny.ckpt")
        for key in ("train_vae", "latents", "train_stage1", "train_stage2"):
            for field in ("out_dir", "checkpoint_dir", "report_dir", "vae_dir", "latents_dir",
                          "init_dir", "vae_metrics"):
                if field in params[key] and params[key][field]:
                    params[key][field] = params[key][field].replace("data/", "full/data/") \
                        .replace("reports/", "full/reports/")
            params[key]["features_dir"] = "data/features"
        for key in ("train_stage1", "train_stage2"):
            params[key].update(steps=1, lr=1e-12)
        params["train_stage2"].update(stage2)

    return with_params(project, name, change)


def test_the_full_profile_loads_sd_and_animatediff_and_trains(trained, sd_folder):
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    path = full_profile(trained, sd_folder, "full.yaml", image_steps=0)
    for command in (("train", "vae"), ("data", "latents"), ("train", "stage1"),
                    ("train", "stage2")):
        svp(trained, *command, params=path)
    vae = json.loads((trained / "full/data/vae/config.json").read_text())
    assert vae["scaling_factor"] == pytest.approx(0.18215)  # SD's VAE, adopted as it is
    sd = UNet2DConditionModel.from_pretrained(str(sd_folder / "unet")).state_dict()
    stage1 = load_file(trained / "full/data/denoiser_stage1" / WEIGHTS)
    for key in ("conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
                ".weight", "mid_block.resnets.0.conv1.weight"):
        torch.testing.assert_close(stage1[f"reference_net.{key}"], sd[key], atol=1e-6, rtol=0)
        torch.testing.assert_close(stage1[f"unet.{key}"], sd[key], atol=1e-6, rtol=0)
    to_out = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.weight"
    assert not stage1[to_out].any()  # the audio attention starts silent, as V-Express's
    motion = torch.load(sd_folder / "mm_tiny.ckpt", weights_only=True)
    stage2 = load_file(trained / "full/data/denoiser_stage2" / WEIGHTS)
    theirs = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0." \
             "attention_blocks.0.to_q.weight"
    ours = "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
    torch.testing.assert_close(stage2[ours], motion[theirs], atol=1e-6, rtol=0)


def one_line_error(run) -> str:
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 3 and len(errors) == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return errors[0]


def test_full_profile_problems_are_one_line_errors(trained, sd_folder, tmp_path):
    from diffusers.models.unets.unet_motion_model import MotionAdapter

    missing = full_profile(trained, tmp_path / "nowhere", "missing.yaml")
    assert "no diffusers UNet here" in one_line_error(
        svp(trained, "train", "stage1", params=missing, check=False))

    def wider(params):
        params["diffusion"]["unet"]["block_out_channels"] = [16, 48]
        params["diffusion"]["unet"]["pretrained"] = str(sd_folder)

    line = one_line_error(svp(trained, "train", "stage1", check=False,
                              params=with_params(trained, "wider.yaml", wider)))
    assert "unet/config.json: block_out_channels is [16, 32], diffusion.unet says [16, 48]" \
        in line

    other = MotionAdapter(block_out_channels=[8, 16], motion_layers_per_block=1,
                          motion_num_attention_heads=2, motion_norm_num_groups=8)
    torch.save(to_animatediff(other.state_dict()), tmp_path / "mm_other.ckpt")

    def other_motion(params):
        params["diffusion"]["motion"]["pretrained"] = str(tmp_path / "mm_other.ckpt")
        params["train_stage2"].update(steps=1, out_dir="data/s2_x",
                                      checkpoint_dir="data/s2_x_checkpoints")

    line = one_line_error(svp(trained, "train", "stage2", check=False,
                              params=with_params(trained, "other.yaml", other_motion)))
    assert "mm_other.ckpt: does not fit diffusion.motion/unet" in line and "shape" in line

    def too_long(params):
        params["diffusion"]["sampling"]["window"] = 9
        params["train_stage2"].update(image_steps=0, steps=1, out_dir="data/s2_y",
                                      checkpoint_dir="data/s2_y_checkpoints")

    line = one_line_error(svp(trained, "train", "stage2", check=False,
                              params=with_params(trained, "long.yaml", too_long)))
    assert line.startswith("error: ") and "long.yaml: diffusion: " in line and \
        "sampling.window 9 exceeds the motion modules' limit (motion.max_seq_length 8)" in line


def test_single_frame_steps_leave_the_motion_modules_and_their_moments_alone(trained):
    """Stage 2's first `image_steps` (2 here) train on single frames: the motion modules get no
    gradient, so AdamW keeps no moments for them (at learning rate 0 with their gradients kept,
    the old way, their moments moved)."""
    from components.diffusion.models.build import add_motion_modules
    from components.diffusion.models.denoiser import Denoiser
    from components.diffusion.train.recipes import set_trainable
    from components.training.registry import load_pretrained

    denoiser = load_pretrained(Denoiser, trained / "data/denoiser_stage1")
    add_motion_modules(denoiser, DiffusionConfig(**DIFFUSION))
    set_trainable(denoiser, 2)
    names = [n for n, p in denoiser.named_parameters() if p.requires_grad]
    motion = {i for i, n in enumerate(names) if "motion_modules" in n}
    assert motion
    state = torch.load(trained / "data/denoiser_stage2_checkpoints/step_0000002/optimizer.pt",
                       weights_only=True)["state"]
    assert state and not motion & set(state)
    after = torch.load(trained / "data/denoiser_stage2_checkpoints/step_0000004/optimizer.pt",
                       weights_only=True)["state"]
    assert motion <= set(after)  # the window steps train them


def test_style_priors_are_replaced_whole_or_not_at_all(trained, monkeypatch, tmp_path):
    """A write of stage 3's style priors that dies halfway (a full disk) leaves the previous
    file as it was and no temp file beside it."""
    from contextlib import chdir
    from dataclasses import replace

    import components.diffusion.train.stage as stage
    from components.config import load_params
    from components.diffusion.train.fit import STYLES

    with chdir(trained):
        params = load_params("params.yaml")
        cfg = replace(params.train_stage3, checkpoint_dir=str(tmp_path))
        stage.write_style_priors(cfg, params.diffusion, "train")
        good = (tmp_path / STYLES).read_bytes()

        def dies_halfway(tensors, filename):
            Path(filename).write_bytes(b"\0" * 100)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(stage, "save_file", dies_halfway)
        with pytest.raises(OSError):
            stage.write_style_priors(cfg, params.diffusion, "train")
    assert (tmp_path / STYLES).read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [STYLES]
