"""How much of the emotion (the style label) the procedural dataset carries, and where.

A linear classifier predicts a clip's emotion from per-clip statistics of (a) the expression
parameters, (b) the speech audio alone, (c) appearance (background, skin, hair colour), with
identity-disjoint cross-validation. Style should be recoverable from expression, partly from
audio, and not from appearance (chance = 1/8).

    .venv/bin/python benchmarks/synth_style_signal.py [--identities 12] [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from table import emit

from components.config import MEAD_EMOTIONS, SynthConfig
from components.synth.generate import ClipSpec, animate, make_identity


def audio_stats(samples: np.ndarray, rate: int) -> np.ndarray:
    """Loudness, spectral tilt, speaking time and pitch (autocorrelation F0) statistics."""
    hop = rate // 25
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames**2).mean(1)) + 1e-6
    voiced = rms > 0.1 * rms.max()
    f0 = []
    for frame in frames[voiced]:
        ac = np.correlate(frame, frame, "full")[hop - 1:]
        lo, hi = rate // 400, rate // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        f0.append(rate / lag)
    spectrum = np.abs(np.fft.rfft(frames[voiced], axis=1)) ** 2
    freqs = np.fft.rfftfreq(hop, 1 / rate)
    tilt = (spectrum[:, freqs > 2500].sum(1) - spectrum[:, freqs < 700].sum(1)) / (
        spectrum.sum(1) + 1e-9)
    log_rms = np.log(rms[voiced])
    return np.array([len(samples) / rate, voiced.mean(), log_rms.mean(), log_rms.std(),
                     np.percentile(log_rms, 90), np.mean(f0), np.std(f0),
                     np.percentile(f0, 90) - np.percentile(f0, 10), tilt.mean(), tilt.std()])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = SynthConfig(n_identities=args.identities)
    rows: dict[str, list] = {"expression": [], "audio": [], "appearance": []}
    labels, groups = [], []
    for i in range(args.identities):
        identity = make_identity(cfg.seed, i)
        look = identity.look
        for e, emotion in enumerate(MEAD_EMOTIONS):
            for level in [1] if emotion == "neutral" else [1, 3]:
                for s in range(args.sentences):
                    _, audio, expression, _ = animate(identity, ClipSpec(i, emotion, level, s),
                                                      cfg)
                    rows["expression"].append(np.r_[expression.mean(0), expression.std(0)])
                    rows["audio"].append(audio_stats(audio, cfg.sample_rate))
                    rows["appearance"].append(np.r_[look.background_top, look.skin, look.hair])
                    labels.append(e)
                    groups.append(i)
    folds = GroupKFold(n_splits=4)
    lines = [f"# Emotion recoverability ({args.identities} identities, {len(labels)} clips, "
             "identity-disjoint 4-fold CV, chance 0.125)", "",
             "| features | accuracy (mean ± sd over folds) |", "|---|---|"]
    for name, features in rows.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores = cross_val_score(model, np.array(features), labels, groups=groups, cv=folds)
        lines.append(f"| {name} | {scores.mean():.3f} ± {scores.std():.3f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
