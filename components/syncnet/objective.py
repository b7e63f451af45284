"""SyncNet's contrastive objective: each face window must lie closer to its own speech than
to the batch's other speech and to its own speech shifted in time (InfoNCE on negative
Euclidean distances, the distances Sync-D and Sync-C are read from)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sync_infonce(face: torch.Tensor, audio: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """face, audio (B, D); shifted (B, K, D). Candidates of face i: every audio of the batch
    (its own is the answer) and its K shifted windows."""
    batch_distances = torch.cdist(face, audio)  # (B, B)
    shifted_distances = (face[:, None] - shifted).norm(dim=-1)  # (B, K)
    logits = -torch.cat([batch_distances, shifted_distances], dim=1)
    return F.cross_entropy(logits, torch.arange(len(face), device=face.device))


def sync_accuracy(face: torch.Tensor, audio: torch.Tensor, shifted: torch.Tensor) -> float:
    """Share of face windows nearer to their own speech than to every shifted window."""
    own = (face - audio).norm(dim=-1)
    return float((own[:, None] < (face[:, None] - shifted).norm(dim=-1)).all(1).float().mean())
