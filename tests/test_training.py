"""The shared training layer: exact resume, keep-last-N, rank-0 batched MLflow logging, the Ray
fit wrapper's errors, and config + safetensors save/load. Every training stage relies on these."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers.training_utils import EMAModel
from mlflow.tracking import MlflowClient
from torch import nn

from components.errors import SvpError
from components.style.extractor import StyleExtractor
from components.tracking import StageRun
from components.training import ray_fit
from components.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prepare_checkpoint_dir,
    read_state,
    save_checkpoint,
)
from components.training.registry import load_pretrained, save_pretrained
from components.training.run_tracking import RankZeroMetrics, resumable_run
from components.training.seeds import step_random


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def train(root, steps: int, stop_after: int | None = None, every: int = 3) -> Tiny:
    """A recipe in miniature: resume if a checkpoint exists, per-step randomness, checkpoints."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    start = 0
    if (resume := latest_checkpoint(root)) is not None:
        start = load_checkpoint(resume, model, optimizer)["step"]
    for step in range(start, steps):
        random = step_random(7, step, 0)
        x = torch.from_numpy(random.numpy.normal(size=(8, 4))).float()
        noise = torch.randn(8, 1, generator=random.torch)
        loss = (model(x) - x.sum(1, keepdim=True) - 0.1 * noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            save_checkpoint(root, step + 1, model, optimizer, extra={"loss": loss.item()})
        if stop_after is not None and step + 1 == stop_after:
            raise KeyboardInterrupt  # a kill between checkpoints
    return model


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    reference = train(tmp_path / "a", steps=10)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", steps=10, stop_after=7)  # last checkpoint: step 6
    assert read_state(latest_checkpoint(tmp_path / "b"))["step"] == 6
    resumed = train(tmp_path / "b", steps=10)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


def test_optimizer_and_rng_state_come_back(tmp_path):
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 1, model, optimizer, world_size=2, extra={"losses": [0.5]})
    expected_draw = torch.rand(3)
    other, other_opt = Tiny(), torch.optim.AdamW(Tiny().parameters(), lr=1)
    state = load_checkpoint(tmp_path / "step_0000001", other, other_opt)
    assert state == {"losses": [0.5], "step": 1, "world_size": 2}
    torch.testing.assert_close(torch.rand(3), expected_draw)  # the RNG resumes where it was
    assert other_opt.state_dict()["param_groups"][0]["lr"] == 1e-2
    saved = optimizer.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(other_opt.state_dict()["state"][0]["exp_avg"], saved)


def test_the_moving_average_comes_back(tmp_path):
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMAModel(model.parameters(), use_ema_warmup=True)
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        ema.step(model.parameters())
    save_checkpoint(tmp_path, 3, model, optimizer, ema=ema)
    other = Tiny()
    other_ema = EMAModel(other.parameters(), use_ema_warmup=True)
    load_checkpoint(tmp_path / "step_0000003", other, ema=other_ema)
    assert other_ema.optimization_step == 3
    for ours, saved in zip(other_ema.shadow_params, ema.shadow_params, strict=True):
        torch.testing.assert_close(ours, saved, rtol=0, atol=0)
    assert not torch.equal(ema.shadow_params[0], model.net[0].weight)  # an average, not a copy


def test_checkpoints_of_the_same_recipe_are_kept_and_of_another_cleared(tmp_path):
    folder = tmp_path / "checkpoints"
    recipe = {"channels": (16, 32), "seed": 0}  # tuples, as the params' dataclasses hold them
    assert not prepare_checkpoint_dir(folder, recipe, 100)
    (folder / "step_0000100").mkdir()
    (folder / "step_0000100" / "state.json").write_text("{}")
    assert not prepare_checkpoint_dir(folder, dict(recipe), 100)
    assert (folder / "step_0000100").is_dir()
    assert prepare_checkpoint_dir(folder, recipe | {"seed": 1}, 100)
    assert not (folder / "step_0000100").exists()


def test_a_run_of_more_steps_resumes_and_of_fewer_starts_over(tmp_path):
    folder, recipe = tmp_path / "checkpoints", {"seed": 0}
    prepare_checkpoint_dir(folder, recipe, 400)
    save_checkpoint(folder, 400, Tiny(), torch.optim.SGD(Tiny().parameters(), lr=0.1))
    assert not prepare_checkpoint_dir(folder, recipe, 800)  # 2x the steps: continue from 400
    assert latest_checkpoint(folder).name == "step_0000400"
    assert prepare_checkpoint_dir(folder, recipe, 200)  # 0.5x: not the 400-step weights
    assert latest_checkpoint(folder) is None


def test_keeps_the_last_n_and_ignores_half_written_folders(tmp_path):
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, optimizer, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000004", "step_0000005"]
    (tmp_path / "step_0000009").mkdir()  # a folder without state.json is not a checkpoint
    (tmp_path / ".tmp_step_0000010").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_0000005"


@pytest.fixture
def mlflow_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return MlflowClient(f"sqlite:///{tmp_path / '.svp/mlflow.db'}")


def test_rank_zero_logs_in_batches_and_other_ranks_not_at_all(mlflow_project, monkeypatch):
    run = resumable_run("svp-test", "train_x", "ckpt/mlflow_run.json", {"lr": 0.1, "n": 2})
    calls = []
    original = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    monkeypatch.setattr(MlflowClient, "log_metric", lambda *a, **k: pytest.fail("per value"))
    rank0, rank1 = RankZeroMetrics(run, rank=0), RankZeroMetrics(run, rank=1)
    for step in range(50):
        rank0.log({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
        rank1.log({"loss": 99.0}, step)
    rank1.flush()
    assert calls == []
    rank0.flush()
    assert len(calls) == 1  # 100 values, one call
    history = mlflow_project.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == list(range(50))
    assert max(m.value for m in history) == 1.0  # nothing from rank 1
    assert mlflow_project.get_run(run.run_id).data.params == {"lr": "0.1", "n": "2"}


def test_a_resumed_stage_logs_into_the_same_run(mlflow_project):
    first = resumable_run("svp-test", "train_x", "ckpt/mlflow_run.json", {})
    again = resumable_run("svp-test", "train_x", "ckpt/mlflow_run.json", {})
    assert again == first
    mlflow_project.delete_run(first.run_id)  # the marker names a run that is gone: a new one
    assert resumable_run("svp-test", "train_x", "ckpt/mlflow_run.json", {}) != first
    assert json.loads(Path("ckpt/mlflow_run.json").read_text())["run_id"] != first.run_id


def _fails_with_bad_input(config: dict) -> None:
    raise SvpError(f"{config['path']}: not a features folder")


def _fails_with_a_bug(config: dict) -> None:
    raise ZeroDivisionError("a bug")


def test_fit_turns_a_worker_error_into_the_stage_error(tmp_path):
    """Local mode here; the same unwrapping serves Ray's WorkerGroupError for N workers
    (test_style.py runs that with 2 workers)."""
    with pytest.raises(SvpError, match=r"^/data/x: not a features folder$"):
        ray_fit.fit(_fails_with_bad_input, {"path": "/data/x"}, name="t", workers=0,
                    use_gpu=False, storage=tmp_path)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        ray_fit.fit(_fails_with_a_bug, {}, name="t", workers=0, use_gpu=False,
                    storage=tmp_path)


def test_worker_cause_digs_through_ray_wrappers():
    from ray.train import ControllerError, WorkerGroupError

    bad = SvpError("features/index.parquet: missing")
    wrapped = WorkerGroupError("rank 1 failed: ...traceback...", {1: RuntimeError("x"), 0: bad})
    assert ray_fit.worker_cause(wrapped) is bad
    assert ray_fit.worker_cause(ControllerError(bad)) is bad


def test_models_save_and_load_as_config_plus_safetensors(tmp_path):
    torch.manual_seed(0)
    model = StyleExtractor(expression_dim=5, d_model=16, n_heads=2, n_layers=1).eval()
    folder = save_pretrained(model, tmp_path / "style")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors"]
    assert not list(tmp_path.glob(".*tmp*"))
    loaded = load_pretrained(StyleExtractor, folder)
    assert loaded.config.expression_dim == 5 and not loaded.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_stage_run_is_plain_data():
    run = StageRun("sqlite:////x/mlflow.db", "abc")
    assert StageRun(**json.loads(json.dumps(run.as_dict()))) == run
