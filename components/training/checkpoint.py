"""Checkpoints a killed run resumes from, bit for bit.

`<root>/step_<n>/` holds the model (safetensors), the optimiser state and, where the recipe keeps
one, the weights' moving average (tensors-only torch files, loaded with `weights_only=True`), the
torch RNG state (safetensors) and `state.json` (`step`,
`world_size` and whatever JSON the recipe keeps beside them, such as `losses`). Each folder is
written under a temporary name and renamed into place, so a step folder is complete or absent;
only the newest `keep` are kept. Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, load_model, save_file, save_model

from components.atomic import keep_only_if_made_by
from components.disk import disk_full, folder_bytes, free_bytes, is_disk_full

STEP_GLOB = "step_*"
EMA_FILE = "ema.pt"


def step_folder(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def latest_checkpoint(root: str | Path) -> Path | None:
    done = sorted(Path(root).glob(f"{STEP_GLOB}/state.json"))
    return done[-1].parent if done else None


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, *, world_size: int = 1,
                    extra: dict | None = None, keep: int = 2,
                    ema: EMAModel | None = None) -> Path:
    """Write `step_<n>/` atomically and keep the newest `keep` step folders."""
    root = Path(root)
    final = step_folder(root, step)
    tmp = root / f".tmp_{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if ema is not None:
            torch.save(ema.state_dict(), tmp / EMA_FILE)
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(
            {**(extra or {}), "step": step, "world_size": world_size}))
    except Exception as err:  # torch.save says only "unexpected pos" when the disk is full
        shutil.rmtree(tmp, ignore_errors=True)
        needed = _checkpoint_bytes(root, model)
        if not (is_disk_full(err) or free_bytes(root) < needed):
            raise
        raise disk_full(root, needed,
                        f"training resumes from {latest_checkpoint(root) or 'the start'}") \
            from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob(STEP_GLOB))[:-keep]:
        shutil.rmtree(old)
    return final


def _checkpoint_bytes(root: Path, model: torch.nn.Module) -> int:
    """The size of one checkpoint: the last complete one, or the weights and AdamW's two
    moments."""
    if (last := latest_checkpoint(root)) is not None:
        return sum(folder_bytes(last))
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def load_checkpoint(path: str | Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    ema: EMAModel | None = None) -> dict:
    """Restore weights, optimiser, moving average and RNG from `path`; returns its
    state.json."""
    path = Path(path)
    load_model(model, str(path / "model.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if ema is not None:
        ema.load_state_dict(torch.load(path / EMA_FILE, weights_only=True))
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["cpu"])
    return json.loads((path / "state.json").read_text())


def read_state(path: str | Path) -> dict:
    return json.loads((Path(path) / "state.json").read_text())


def prepare_checkpoint_dir(root: str | Path, recipe: dict, steps: int) -> bool:
    """Keep the checkpoints in `root` only if they were made by this `recipe` (the params that
    shape the weights, and the versions of the inputs) and none is past `steps`; otherwise start
    over. True if cleared. More steps than a kept run resume it (the recipes keep a constant
    learning rate after warm-up, so that equals training that long from the start); fewer start
    over, or the longer run's weights would pass for a shorter one's."""
    last = latest_checkpoint(root)
    past = last is not None and int(last.name.removeprefix("step_")) > steps
    if past:
        shutil.rmtree(root)
    return keep_only_if_made_by(root, recipe) or past
