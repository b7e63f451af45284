"""What each of the paper's three stages trains, and what one training sample is.

- Stage 1 (single frames): the denoising UNet trains, but for its audio/style `attn2` and its
  `norm2`; the ReferenceNet and the Head-Kps guider train. The reference is another frame of the
  same clip (or of a procedural identity's stills, `procedural_share`).
- Stage 2 (8-frame windows): the motion modules, the audio `attn2` + `norm2` and the audio
  projection train; everything else is frozen. The reference is a frame of the same clip.
- Stage 3: only the style attention and the style projection train. The reference is a frame of
  a clip of the same identity with another emotion (the paper's cross-emotion training), or, for
  a share of the samples (`own_reference_share`), a frame of the target's own clip: the
  reconstruction protocol's case, where the reference already shows the emotion and the style
  must not add it again; the style is a draw from the prior of another clip of the target's
  style group.

The ReferenceNet layers after its last self-attention input are never read (V-Express freezes
its `up_blocks.3` for the same reason) and stay frozen.
"""

from __future__ import annotations

import numpy as np
import torch

from components.diffusion.frames import Clip, Sample, audio_windows, kps_images
from components.diffusion.models.denoiser import Denoiser
from components.style.extractor import sample_style


def _in_spatial_attn2(name: str) -> bool:
    return ".attn2." in name or (".norm2." in name and "transformer_blocks" in name
                                 and "motion_modules" not in name)


def unread_reference_params(denoiser: Denoiser) -> set[str]:
    """ReferenceNet parameters its bank does not depend on (found by one backward pass from
    the bank of a blank latent): the layers after the last self-attention input it keeps."""
    cfg = denoiser.config.unet_config
    blank = torch.zeros(1, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"],
                        device=denoiser.device)
    params = dict(denoiser.reference_net.named_parameters())
    before = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    with torch.enable_grad():
        sum(f.sum() for f in denoiser.encode_reference(blank).values()).backward()
    unread = {f"reference_net.{n}" for n, p in params.items() if p.grad is None}
    for n, p in params.items():
        p.grad = None
        p.requires_grad_(before[n])
    return unread


def trainable(stage: int, name: str, unread: set[str]) -> bool:
    """Does `name` (a `Denoiser` parameter) train in `stage`?"""
    if stage == 1:
        if name.startswith("reference_net."):
            return name not in unread
        if name.startswith(("kps_guider.", "reference_in.")):
            return True
        return name.startswith("unet.") and "motion_modules" not in name \
            and not _in_spatial_attn2(name)
    if stage == 2:
        if name.startswith("audio_projection."):
            return True
        if not name.startswith("unet."):
            return False
        if "motion_modules" in name:
            return True
        return _in_spatial_attn2(name) and ".processor.style." not in name
    return name.startswith("style_projection.") or ".attn2.processor.style." in name


def set_trainable(denoiser: Denoiser, stage: int) -> list[torch.nn.Parameter]:
    """Freeze everything `stage` does not train; returns the parameters it trains."""
    unread = unread_reference_params(denoiser) if stage == 1 else set()
    params = []
    for name, param in denoiser.named_parameters():
        param.requires_grad_(trainable(stage, name, unread))
        if param.requires_grad:
            params.append(param)
    return params


def pick_sample(stage: int, clips: list[Clip], frames: int, rng: np.random.Generator,
                targets: list[int] | None = None, own_reference_share: float = 0.0) -> Sample:
    """A sample whose target clip is drawn from `targets` (default: any clip); in stage 3 its
    reference is of another emotion, or of its own clip with `own_reference_share`."""
    target = int(rng.integers(len(clips))) if targets is None else \
        targets[int(rng.integers(len(targets)))]
    clip = clips[target]
    start = int(rng.integers(0, max(1, len(clip) - frames + 1)))
    reference = target
    own = stage == 3 and own_reference_share > 0 and rng.random() < own_reference_share
    if stage == 3 and not own:  # the paper's cross-emotion training
        others = [i for i, c in enumerate(clips)
                  if c.identity == clip.identity and c.group != clip.group]
        reference = int(others[rng.integers(len(others))]) if others else target
    reference_frame = int(rng.integers(len(clips[reference])))
    if (stage == 1 or own) and reference == target and len(clip) > 1:  # not the target itself
        while reference_frame == start:
            reference_frame = int(rng.integers(len(clip)))
    style = None
    if stage == 3:
        group = [i for i, c in enumerate(clips) if c.group == clip.group and i != target]
        style = int(group[rng.integers(len(group))]) if group else target
    return Sample(target, start, reference, reference_frame, style)


def batch_of(picks: list[Sample], clips: list[Clip], frames: int, resolution: int,
             audio_frames: int, styles: np.ndarray | None, with_audio: bool,
             rng_torch: torch.Generator | None = None) -> dict[str, torch.Tensor | None]:
    """Tensors for `Denoiser.forward` (the style drawn from each style clip's prior)."""
    latents, reference, kps, audio, mouths = [], [], [], [], []
    for p in picks:
        clip = clips[p.target]
        idx = np.clip(np.arange(p.start, p.start + frames), 0, len(clip) - 1)
        latents.append(clip.latents[idx].astype(np.float32))
        mouths.append(mouth_masks(clip.landmarks[idx], resolution, clip.latents.shape[-1]))
        reference.append(clips[p.reference].latents[p.reference_frame].astype(np.float32))
        kps.append(kps_images(clip.kps[idx], resolution))
        if with_audio:
            audio.append(audio_windows(clip.audio, idx, audio_frames))
    style = None
    if styles is not None:
        mean = torch.from_numpy(np.stack([styles[p.style, 0] for p in picks]))
        logvar = torch.from_numpy(np.stack([styles[p.style, 1] for p in picks]))
        style = sample_style(mean, logvar, rng_torch)
    return {"latents": torch.from_numpy(np.stack(latents)).permute(0, 2, 1, 3, 4),
            "reference": torch.from_numpy(np.stack(reference)),
            "kps": torch.from_numpy(np.stack(kps)),
            "audio": torch.from_numpy(np.stack(audio)) if with_audio else None,
            "style": style, "mouth": torch.from_numpy(np.stack(mouths))[:, None]}


def mouth_masks(landmarks: np.ndarray, resolution: int, size: int) -> np.ndarray:
    """(F, size, size) float32: 1 inside each frame's mouth box (landmarks 48-67, the box
    doubled about its centre, as V-Express's lip mask), at latent resolution."""
    masks = np.zeros((len(landmarks), size, size), np.float32)
    scale = size / resolution
    for t, points in enumerate(landmarks[:, 48:68]):
        if not np.isfinite(points).all():
            continue
        lo, hi = points.min(0), points.max(0)
        centre, half = (lo + hi) / 2, (hi - lo)  # twice the box: half-size = its full size
        x0, y0 = np.floor((centre - half) * scale).astype(int).clip(0, size)
        x1, y1 = np.ceil((centre + half) * scale).astype(int).clip(0, size)
        masks[t, y0:y1, x0:x1] = 1
    return masks
