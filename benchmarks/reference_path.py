"""What the ReferenceNet path carries (issue #20: why hair, clothes and background colours drift).

    .venv/bin/python benchmarks/reference_path.py PROJECT [--denoiser DIR] [--out FILE]

PROJECT is a checkout whose pipeline ran through stage 1. Stage 1's check (the fast sampler,
one frame per item, the same items each time) is run on three sets of faces: the training
split's speakers, the procedural stills stage 1 also trains on (hundreds of identities, four
frames each), and the held-out speakers; and measured where the colours drift:

- background: the mean colour of the frame's two top corners (background in every portrait of
  the embedded dataset, which never moves) against the reference frame's, in 0-255 RGB;
- the whole frame's PSNR against the real target frame;
- both for the real target frame passed through the VAE as well (what the latent space allows);
- how much of each reference-reading self-attention's weight lands on the reference tokens
  (the sample's own tokens and the reference's are equally many: 0.5 would be no preference).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from table import cpu_name, emit

from components.config import load_params
from components.diffusion.frames import load_clips
from components.diffusion.models.attention import ReferenceAttnProcessor, _per_image
from components.diffusion.models.denoiser import Denoiser
from components.errors import SvpError
from components.evaluation.metrics import FaceLandmarks
from components.evaluation.stage_checks import Evaluation, fixed_items
from components.generation.pipeline import new_pipeline
from components.precision import use_bf16
from components.training.registry import load_pretrained

CORNER = 6  # pixels of each top corner (of 64) read as background


class _MeasuredRead:
    """A reference-reading processor that also records the weight on the reference tokens (a
    class: diffusers passes a processor only the keyword arguments its `__call__` names)."""

    def __init__(self, processor: ReferenceAttnProcessor, shares: dict[str, list[float]]):
        self.processor, self.shares = processor, shares

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, inputs=None):
        n, length = hidden_states.shape[:2]
        keep = torch.ones(n, dtype=torch.bool) if inputs.reference_keep is None else \
            _per_image(inputs.reference_keep, n).cpu()
        if keep.any():  # guidance's unconditional half has no reference
            own = hidden_states[keep]
            reference = _per_image(inputs.bank[self.processor.name], n)[keep].to(own.dtype)
            q, k = attn.to_q(own), attn.to_k(torch.cat([own, reference], dim=1))
            q, k = (x.unflatten(-1, (attn.heads, -1)).transpose(1, 2).float() for x in (q, k))
            weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
            self.shares.setdefault(self.processor.name, []).append(
                weights[..., length:].sum(-1).mean().item())
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                              inputs)


class ReferenceShare:
    """Per layer, the attention weight the denoiser's queries put on the reference tokens."""

    def __init__(self, denoiser: Denoiser):
        self.shares: dict[str, list[float]] = {}
        for module in denoiser.unet.modules():
            processor = getattr(module, "processor", None)
            if isinstance(processor, ReferenceAttnProcessor) and processor.mode == "read":
                module.set_processor(_MeasuredRead(processor, self.shares))

    def summary(self) -> dict[str, float]:
        return {name: float(np.mean(v)) for name, v in self.shares.items()}


def corners(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, 3): the mean colour of the two top corners."""
    return np.concatenate([frames[:, :CORNER, :CORNER], frames[:, :CORNER, -CORNER:]],
                          axis=2).reshape(len(frames), -1, 3).mean(1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def measure(ev: Evaluation, share: ReferenceShare, n: int) -> dict[str, float]:
    share.shares.clear()
    items = fixed_items(1, ev.clips, n, 1)
    generated = ev.generate(items, 1)[:, 0]
    real, reference = ev.real(items, 1)[:, 0], ev.reference_frames(items, 1)[:, 0]
    latents = torch.from_numpy(np.stack([ev.clips[i.target].latents[i.start] for i in items]))
    through_vae = np.stack(list(ev.pipeline.decode_frames(
        latents.float().permute(1, 0, 2, 3).to(ev.pipeline.device))))
    layers = share.summary()
    return {"items": len(items),
            "identities": len({ev.clips[i.target].identity for i in items}),
            "background error (generated)": float(np.abs(corners(generated)
                                                        - corners(reference)).mean()),
            "background error (real target)": float(np.abs(corners(real)
                                                          - corners(reference)).mean()),
            "background error (real target through the VAE)": float(np.abs(
                corners(through_vae) - corners(reference)).mean()),
            "PSNR": psnr(generated, real),
            "PSNR (real target through the VAE)": psnr(through_vae, real),
            "reference attention share": float(np.mean(list(layers.values()))),
            **{f"  {block}": float(np.mean([v for name, v in layers.items()
                                            if name.startswith(block + ".")]))
               for block in dict.fromkeys(name.split(".attentions")[0] for name in layers)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--denoiser", type=Path, help="default: the project's stage 1 output")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.items < 1:
        raise SystemExit(f"--items must be at least 1, got {args.items}")
    if args.denoiser is not None and not (args.denoiser / "config.json").is_file():
        raise SystemExit(f"{args.denoiser}: not a saved denoiser (no config.json)")
    try:
        params = load_params(args.project / "params.yaml")
    except SvpError as err:
        raise SystemExit(str(err)) from None
    cfg, diffusion = params.train_stage1, params.diffusion
    at = lambda p: args.project / p  # noqa: E731
    features = json.loads(at(cfg.features_dir).joinpath("config.json").read_text())
    denoiser = load_pretrained(Denoiser, args.denoiser or at(cfg.out_dir))
    share = ReferenceShare(denoiser)
    pipeline = new_pipeline(load_pretrained(AutoencoderKL, at(cfg.vae_dir)), denoiser, diffusion)
    pipeline.bf16 = use_bf16(cfg.bf16, pipeline.device, "reference_path")
    detector = FaceLandmarks(features["dlib_predictor"])
    results = {}
    for split, label in (("train", "trained-on faces"), ("procedural", "procedural stills"),
                         ("test", "held-out faces")):
        clips = load_clips(at(cfg.latents_dir), at(cfg.features_dir), split)
        ev = Evaluation(pipeline, clips, detector, None, cfg.seed, cfg.check_quality)
        results[label] = measure(ev, share, args.items)
    lines = [f"CPU: {cpu_name()}; {args.project.name}: synth seed {params.synth.seed}, "
             f"{params.synth.n_identities} identities; stage 1 denoiser "
             f"`{args.denoiser or cfg.out_dir}`, {cfg.check_quality} sampler.", "",
             "| measure | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for key in next(iter(results.values())):
        lines.append(f"| {key} | " + " | ".join(
            f"{r[key]:.0f}" if key in ("items", "identities") else f"{r[key]:.3f}"
            for r in results.values()) + " |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
