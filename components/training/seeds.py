"""Randomness derived from (seed, step, rank) alone, so any step can be replayed after a resume
and every worker draws differently."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StepRandom:
    numpy: np.random.Generator  # batch sampling
    torch: torch.Generator  # noise drawn on the CPU (the same draw on any device)


def step_random(seed: int, step: int, rank: int) -> StepRandom:
    """This step's generators; also seeds torch's global RNG, which dropout draws from."""
    torch.manual_seed(seed * 7_919 + step * 31 + rank)
    return StepRandom(
        numpy=np.random.default_rng([seed, step, rank]),
        torch=torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + rank),
    )
