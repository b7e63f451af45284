"""The full profile's denoiser training on a GPU: seconds a step and peak memory of each stage.

    python benchmarks/training_full.py [--device cuda] [--profile profiles/full.args]
        [--steps 5] [--out benchmarks/training_full.md]

Each of the three stages runs its real step (`fit.denoising_loss` and `fit.apply_gradients`:
what `train_loop` runs on every Ray worker) with the stage's params from the profile: what
trains (`recipes.set_trainable`), batch size, frames per sample, bf16 autocast, gradient
checkpointing, AdamW and the moving average. One denoiser goes through the stages as training
takes it (stage 2 adds the motion modules). Weights are random and the batches made up at the
profile's shapes (512² frames, their Head-Kps images, Whisper windows, a style draw): speed and
memory depend on the shapes, not on the values, and no pretrained weights or footage exist where
this runs. Two warm-up steps, then `--steps` timed ones; one worker (a Ray cluster's worker
does the same step, on its share of the batch). Stage 2's single-frame steps (`image_steps`,
none in the full profile) are not timed: its rows are window steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from generation_full import _device_name, _millions, _reset_peak, _sync, peak_memory_mib
from table import emit

from components.config import DiffusionConfig, Params, TrainDenoiserConfig, load_params
from components.diffusion.models.build import add_motion_modules, new_denoiser
from components.diffusion.models.denoiser import Denoiser
from components.diffusion.models.schedule import training_scheduler
from components.diffusion.train.fit import (
    DenoisingObjective,
    apply_gradients,
    denoising_loss,
    moving_average,
)
from components.diffusion.train.recipes import set_trainable
from components.errors import SvpError
from components.features.audio import N_HIDDEN, WIDTH
from components.precision import use_bf16


def made_batch(denoiser: Denoiser, cfg: TrainDenoiserConfig, d: DiffusionConfig,
               device: torch.device, g: torch.Generator) -> dict:
    """A batch shaped as `recipes.batch_of` makes it for this stage, random values."""
    frames, b = cfg.frames(d), cfg.batch_size
    r, h = d.resolution, d.resolution // 2 ** (len(d.vae.block_out_channels) - 1)
    steps = denoiser.config.audio_config["window_steps"]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    return {"latents": randn(b, d.vae.latent_channels, frames, h, h),
            "reference": randn(b, d.vae.latent_channels, h, h),
            "kps": torch.rand(b, frames, 3, r, r, generator=g).to(device),
            "audio": randn(b, frames, N_HIDDEN, steps, WIDTH) if cfg.stage > 1 else None,
            "style": randn(b, d.style.style_dim) if cfg.stage == 3 else None,
            "mouth": (torch.rand(b, 1, frames, h, h, generator=g) < 0.05).float().to(device)}


def timed_stage(denoiser: Denoiser, cfg: TrainDenoiserConfig, d: DiffusionConfig,
                device: torch.device, steps: int) -> dict:
    params = set_trainable(denoiser, cfg.stage)
    if cfg.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    else:
        denoiser.disable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = moving_average(cfg, params)
    model = DenoisingObjective(denoiser, reference_trains=cfg.stage == 1).train()
    scheduler = training_scheduler(d.noise)
    bf16 = use_bf16(cfg.bf16, device, f"train_stage{cfg.stage}")
    g = torch.Generator().manual_seed(cfg.stage)
    batch = made_batch(denoiser, cfg, d, device, g)
    b = len(batch["latents"])

    def step() -> float:
        keep = torch.rand(b, generator=g) >= cfg.uncond_probability
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=g)
        noise = torch.randn(batch["latents"].shape, generator=g)
        loss = denoising_loss(model, scheduler, batch, keep.to(device), timesteps.to(device),
                              noise.to(device), cfg, bf16)
        apply_gradients(loss, optimizer, params, ema, without=[])
        return loss.item()

    _sync(device)
    _reset_peak(device)
    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    frames = b * batch["latents"].shape[2]
    row = {"stage": cfg.stage, "batch": b, "frames": frames, "bf16": bf16,
           "checkpointing": cfg.gradient_checkpointing, "ema": ema is not None,
           "trained_m": sum(p.numel() for p in params) / 1e6, "s_per_step": seconds,
           "frames_per_s": frames / seconds, "peak_mib": peak_memory_mib(device),
           "finite": all(torch.isfinite(torch.tensor(losses)))}
    return row  # the optimizer's moments and the average go with this frame


def random_denoiser(params: Params, device: torch.device) -> tuple[Denoiser, DiffusionConfig]:
    d = params.diffusion
    d = replace(d, unet=replace(d.unet, pretrained=None), motion=replace(d.motion, pretrained=None))
    with device:
        return new_denoiser(d, 25.0), d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", default="profiles/full.args",
                        help="a params profile (key=value lines); '' for params.yaml alone")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.steps < 1:
        sys.exit(f"--steps {args.steps}: must be at least 1")
    device = torch.device(args.device)
    try:
        params = load_params("params.yaml", args.profile or None)
    except SvpError as err:
        sys.exit(f"error: {err}")
    denoiser, d = random_denoiser(params, device)
    rows = []
    for stage, cfg in ((1, params.train_stage1), (2, params.train_stage2),
                       (3, params.train_stage3)):
        if stage == 2:
            with device:
                add_motion_modules(denoiser, d)
        rows.append(timed_stage(denoiser, cfg, d, device, args.steps))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        r = rows[-1]
        print(f"stage {stage}: {r['s_per_step']:.3f} s/step, peak {r['peak_mib']:.0f} MiB",
              file=sys.stderr, flush=True)
    emit(report(rows, params, d, device, _millions(denoiser)), args.out)


def report(rows: list[dict], params: Params, d: DiffusionConfig, device: torch.device,
           millions: float) -> list[str]:
    lines = [f"Device: {_device_name(device)}, torch {torch.__version__}; {d.resolution}² "
             f"frames, denoiser {millions:.0f} M parameters with its motion modules (random "
             "weights); each stage's real step with its params, two warm-up steps, then timed.",
             "",
             "| stage | batch | frames a step | trained parameters | bf16 | gradient "
             "checkpointing | moving average | s/step | frames/s | peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['batch']} | {r['frames']} | {r['trained_m']:.1f} M | "
                     f"{'yes' if r['bf16'] else 'no'} | "
                     f"{'yes' if r['checkpointing'] else 'no'} | {'yes' if r['ema'] else 'no'} | "
                     f"{r['s_per_step']:.3f} | {r['frames_per_s']:.1f} | "
                     f"{r['peak_mib']:.0f} MiB |")
    if not all(r["finite"] for r in rows):
        lines.append("\nA loss was not finite: the figures time a broken step.")
    steps = {1: params.train_stage1.steps, 2: params.train_stage2.steps,
             3: params.train_stage3.steps}
    hours = sum(steps[r["stage"]] * r["s_per_step"] for r in rows) / 3600
    lines.append(f"\nThe profile's steps ({', '.join(f'stage {k}: {v}' for k, v in steps.items())})"
                 f" at these speeds: {hours:.1f} h on one such device (data loading not counted).")
    return lines


if __name__ == "__main__":
    main()
