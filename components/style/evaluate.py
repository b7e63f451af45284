"""What the style space learned: the paper's clustering strength and a t-SNE picture.

Clustering strength (per identity, clusters = its emotions): the mean distance between emotion
centroids over the mean distance of a clip's style mean to its own emotion's centroid. Reported
for three inputs (expression only, audio only, both), as the paper's Table 3.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import torch

from components.errors import SvpError
from components.style.data import StyleClip, whole_clip_batch
from components.style.extractor import StyleExtractor

MODES = ("exp", "audio", "both")


@torch.no_grad()
def style_means(model: StyleExtractor, clips: list[StyleClip], mode: str) -> np.ndarray:
    model.eval()
    batch = whole_clip_batch(clips, model.config.max_frames)
    n = len(clips)
    keep_exp = torch.full((n,), mode != "audio")
    keep_audio = torch.full((n,), mode != "exp")
    mean, _ = model(batch["expression"], batch["audio"], batch["valid"], keep_exp, keep_audio)
    return mean.numpy()


def clustering_strength(means: np.ndarray, clips: list[StyleClip]) -> dict:
    """{'mean': over identities, 'per_identity': {...}, 'per_emotion': {emotion: ratio}}.
    Only emotions with at least two clips of an identity form a cluster (one clip has no
    spread); an identity needs two such emotions."""
    per_identity, per_emotion = {}, {}
    for identity in sorted({c.identity for c in clips}):
        idx = [i for i, c in enumerate(clips) if c.identity == identity]
        counts = Counter(clips[i].emotion for i in idx)
        emotions = sorted(e for e, n in counts.items() if n >= 2)
        idx = [i for i in idx if clips[i].emotion in emotions]
        if len(emotions) < 2:
            continue
        centre = {e: means[[i for i in idx if clips[i].emotion == e]].mean(0) for e in emotions}
        intra = {e: np.mean([np.linalg.norm(means[i] - centre[e]) for i in idx
                             if clips[i].emotion == e]) for e in emotions}
        inter = np.mean([np.linalg.norm(centre[a] - centre[b])
                         for a, b in combinations(emotions, 2)])
        per_identity[identity] = float(inter / np.mean(list(intra.values())))
        for e in emotions:
            others = np.mean([np.linalg.norm(centre[e] - centre[o]) for o in emotions if o != e])
            per_emotion.setdefault(e, []).append(others / intra[e])
    if not per_identity:
        raise SvpError("clustering strength needs a held-out identity with two or more clips "
                       "in each of at least two emotions")
    return {"mean": float(np.mean(list(per_identity.values()))),
            "per_identity": per_identity,
            "per_emotion": {e: float(np.mean(v)) for e, v in sorted(per_emotion.items())}}


def tsne_plot(means: np.ndarray, clips: list[StyleClip], path, title: str) -> None:
    """2-D t-SNE of style means coloured by emotion, marker size by intensity level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(1.0, (len(means) - 1) / 3))  # must stay below the sample count
    points = TSNE(n_components=2, perplexity=perplexity, random_state=0,
                  init="pca").fit_transform(means)
    emotions = sorted({c.emotion or "?" for c in clips})
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    for k, emotion in enumerate(emotions):
        idx = [i for i, c in enumerate(clips) if (c.emotion or "?") == emotion]
        sizes = [20 + 25 * (clips[i].level or 1) for i in idx]
        ax.scatter(points[idx, 0], points[idx, 1], s=sizes, color=colours(k), label=emotion,
                   alpha=0.8, edgecolors="none")
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
