"""InfoNCE over style samples, with similarity = 1 / (distance + c) (the paper's choice)."""

from __future__ import annotations

import torch
from torch import Tensor


def style_infonce(styles: Tensor, groups: Tensor, temperature: float = 0.1,
                  constant: float = 1.0) -> Tensor:
    """Mean over anchors of -log(sum over positives / sum over all others), where positives share
    the anchor's style group (same identity and emotion, or the same video). Every anchor must
    have at least one positive."""
    distance = torch.cdist(styles, styles)
    logits = 1.0 / (distance + constant) / temperature
    eye = torch.eye(len(styles), dtype=torch.bool, device=styles.device)
    positive = (groups[:, None] == groups[None, :]) & ~eye
    if not positive.any(dim=1).all():
        raise ValueError("style_infonce: an anchor has no positive in the batch")
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    pos_log = log_prob.masked_fill(~positive, float("-inf")).logsumexp(dim=1)
    return -pos_log.mean()


def modality_dropout(n: int, p_drop: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per sample, which modalities are kept: each is dropped with p_drop, never both at once."""
    drop = torch.rand(n, generator=generator) < 2 * p_drop
    which = torch.rand(n, generator=generator) < 0.5
    expression_present = ~(drop & which)
    audio_present = ~(drop & ~which)
    return expression_present, audio_present
