"""Randomness derived from a seed and the stream's name alone, through numpy's `SeedSequence`
(hashed, so no two (seed, step, rank) or (seed, stream) share a state, unlike sums of scaled
integers, where step 1/rank 0 met step 0/rank 31): any step can be replayed after a resume,
every worker draws differently, and a generation's style noise is not its latent noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STREAMS = {"latents": 1, "style": 2}  # a generation's independent streams


def _seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0] >> 1)


def torch_generator(seed: int, stream: str, index: int = 0) -> torch.Generator:
    """A CPU generator for one stream of a generation (`index`: the video in a batch), so the
    same seed gives the same draw on any device."""
    return torch.Generator().manual_seed(_seed(seed, STREAMS[stream], index))


@dataclass(frozen=True)
class StepRandom:
    numpy: np.random.Generator  # batch sampling
    torch: torch.Generator  # noise drawn on the CPU (the same draw on any device)


def step_random(seed: int, step: int, rank: int) -> StepRandom:
    """This step's generators; also seeds torch's global RNG, which dropout draws from."""
    torch.manual_seed(_seed(seed, step, rank, 0))
    return StepRandom(numpy=np.random.default_rng([seed, step, rank]),
                      torch=torch.Generator().manual_seed(_seed(seed, step, rank, 1)))
