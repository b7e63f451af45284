"""bf16 autocast where the hardware has bf16 units (`bf16: auto|on|off` in a stage's params).

On CPUs with AMX or AVX512-BF16 (detected at run time), oneDNN runs bf16 convolutions and
matmuls on those units: sampling the embedded generator took 0.65 s instead of 1.20 s a batch and
a VAE training step 0.13 s instead of 0.19 s on a 2-core Xeon with AMX. Results are
deterministic on one machine, but differ between CPUs with and without the units (`auto` takes
different arithmetic there); `off` gives fp32 everywhere.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def bf16_units(device: torch.device) -> str | None:
    """The bf16 units `device` has, or None."""
    if device.type == "cuda":
        return "CUDA bf16" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    units = [name for name, present in (("AMX", torch.cpu._is_amx_tile_supported()),
                                        ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()))
             if present]
    return " + ".join(units) or None


def use_bf16(setting: str, device: torch.device, what: str) -> bool:
    """Whether `what` runs under bf16 autocast on `device`; says so in the log."""
    units = bf16_units(device)
    chosen = setting == "on" or (setting == "auto" and units is not None)
    log.info("%s: bf16 autocast %s (bf16: %s; %s)", what, "on" if chosen else "off", setting,
             f"this {device.type.upper()} has {units}" if units else
             f"no bf16 units on this {device.type.upper()}")
    return chosen


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `enabled`; fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
