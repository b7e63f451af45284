"""Shared fixtures: a tiny generated dataset (real mp4/wav files) and helpers for media."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from components.config import SynthConfig
from components.runtime import apply_offline_defaults
from components.synth.generate import synthesize_dataset

apply_offline_defaults()

PROJECT = Path(__file__).resolve().parents[1]
SVP = str(Path(sys.executable).with_name("svp"))
TINY = SynthConfig(n_identities=3, emotions=["happy", "neutral", "sad"], levels=[3],
                   n_sentences=1, resolution=128, workers=2)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 9-clip MEAD-shaped tree (3 identities x neutral/happy/sad). Treat as read-only."""
    root = tmp_path_factory.mktemp("synth") / "mead"
    synthesize_dataset(TINY, root)
    return root


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for flow runs and deployments (no network, no server to run)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def isolated_mlflow_uri():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; keep it from leaking between tests
    (and into the subprocesses later tests start)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


# The generator's tiny stages, trained once per session (test_diffusion_stages, test_evaluation)
DIFFUSION = {
    "resolution": 32,
    "vae": {"pretrained": None, "block_out_channels": [8, 16, 16], "layers_per_block": 1,
            "latent_channels": 4, "norm_num_groups": 8, "mid_block_attention": False},
    "unet": {"pretrained": None,
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
             "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 32, "norm_num_groups": 8},
    "motion": {"pretrained": None, "num_attention_heads": 2, "norm_num_groups": 8,
               "max_seq_length": 8, "use_mid_block": True},
    "kps_guider_channels": [8, 8, 16],
    "audio": {"window_s": 0.2, "vector_dim": 4, "hidden_dim": 16, "n_tokens": 2},
    "style": {"style_dim": 32, "hidden_dim": 16, "n_tokens": 2},
    "sampling": {"steps": 3, "guidance": 2.0, "window": 4, "overlap": 1,
                 "fast": {"solver": "dpmsolver++", "steps": 2, "guidance": 2.0,
                          "guidance_from": 1}},
}
STAGE = {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "eval_samples": 2}
TINY_EVALUATION = {"reconstruction_clips": 2, "style_transfer_clips": 2, "frames": 16,
                   "fid_every": 8, "report_videos": 1, "long_video_s": 1.92,
                   "long_video_segment_s": 0.64}
# the tiny generator's frames are noise to dlib (no landmarks, so no LMD): promotion judges it
# on FVD and FID
TINY_PROMOTE_COMPARE = {"reconstruction/full/fvd": "lower", "style_transfer/full/fvd": "lower",
                        "reconstruction/full/fid": "lower"}


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """Features of 3 identities x happy/neutral/sad x 2 sentences, a random style extractor
    and SyncNet, and a params.yaml of tiny diffusion stages."""
    from components.config import FeaturesConfig
    from components.features.stage import build_features
    from components.style.extractor import StyleExtractor
    from components.syncnet.model import SyncNet
    from tests.test_features_stage import manifest_of

    root = tmp_path_factory.mktemp("diffusion")
    synthesize_dataset(replace(TINY, n_sentences=2), root / "mead")
    features = FeaturesConfig(manifest=str(manifest_of(root / "mead", root)),
                              out_dir=str(root / "data/features"),
                              report_dir=str(root / "reports/features"))
    build_features(features)
    torch.manual_seed(0)
    StyleExtractor(expression_dim=16, d_model=32, n_layers=1).save_pretrained(
        root / "data/style")
    SyncNet(face_size=56, face_region="mouth", audio_channels=(8, 16, 16, 16, 16, 32),
            face_channels=(8, 16, 16, 16, 16, 32), hidden_dim=32, embed_dim=16).save_pretrained(
        root / "data/syncnet")  # random: evaluate's Sync-C path runs; test_syncnet trains one
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["diffusion"] = DIFFUSION
    params["train_vae"].update(steps=6, batch_size=4, checkpoint_every=3, procedural_faces=8,
                               eval_frames=8)
    params["latents"].update(procedural_identities=3, procedural_frames=2, batch_size=16)
    params["train_stage1"].update(STAGE, procedural_share=0.5)
    params["train_stage2"].update(STAGE, image_steps=2, image_batch_size=4)
    params["train_stage3"].update(STAGE)
    params["evaluate"].update(TINY_EVALUATION)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text("stages: {}\n")  # the project root for stored paths
    return root


def svp(cwd: Path, *args: str, params: Path | None = None, check: bool = True):
    command = [SVP, *args, "--params", str(params or cwd / "params.yaml")]
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if check:
        assert run.returncode == 0, f"{args}: {run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


def with_params(project: Path, name: str, change) -> Path:
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    path = project / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def trained(project) -> Path:
    for command in (("train", "vae"), ("data", "latents"), ("train", "stage1"),
                    ("train", "stage2"), ("train", "stage3")):
        svp(project, *command)
    return project
