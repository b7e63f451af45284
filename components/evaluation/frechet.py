"""The Fréchet distance between two feature sets, each taken as a Gaussian (FID, FVD), and the
standard error of a change in it over evaluation cases (a paired bootstrap)."""

from __future__ import annotations

import numpy as np


def _trace_sqrt_product(a_centred: np.ndarray, b_centred: np.ndarray) -> float:
    """Tr((S_a S_b)^½) of the sample covariances of centred samples A (N x D) and B (M x D), the
    term pytorch-fid gets from scipy.linalg.sqrtm(S_a @ S_b).

    For any factor S_a = Rᵀ R, S_a S_b has the nonzero eigenvalues of the symmetric PSD matrix
    R S_b Rᵀ, so the trace is the sum of the square roots of those. R is the centred samples
    (N <= D: the covariance is singular) or comes from S_a's eigendecomposition. When both sets
    are smaller than D, R S_b Rᵀ = K Kᵀ for the N x M cross-Gram matrix K = A Bᵀ / √((N-1)(M-1)),
    and the trace is K's nuclear norm. The same number as sqrtm's real part, without its
    imaginary rounding residue or its cost: sqrtm of a 2048² product takes 30-50 s on this
    project's 2-core machines, this milliseconds (what lets evaluation bootstrap over cases)."""
    (n, d), m = a_centred.shape, len(b_centred)
    if n <= d and m <= d:
        cross = a_centred @ b_centred.T / np.sqrt((n - 1) * (m - 1))
        return float(np.linalg.svd(cross, compute_uv=False).sum())
    cov_b = np.atleast_2d(np.cov(b_centred, rowvar=False))
    if n <= d:
        r = a_centred / np.sqrt(n - 1)
    else:
        w, v = np.linalg.eigh(np.atleast_2d(np.cov(a_centred, rowvar=False)))
        r = (v * np.sqrt(np.clip(w, 0, None))).T
    eig = np.linalg.eigvalsh(r @ cov_b @ r.T)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½) of features a (N, D) and b (M, D), with
    sample covariances (divided by N - 1), as pytorch-fid and the FID/FVD reference code."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    for name, x in (("first", a), ("second", b)):
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"frechet_distance: the {name} feature set has shape {x.shape}; "
                             "it needs (N, D) with N >= 2 samples")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    a_centred, b_centred, diff = a - mu_a, b - mu_b, mu_a - mu_b
    traces = (a_centred ** 2).sum() / (len(a) - 1) + (b_centred ** 2).sum() / (len(b) - 1)
    return float(diff @ diff + traces - 2 * _trace_sqrt_product(a_centred, b_centred))


def relative_change_se(real: np.ndarray, first: np.ndarray, second: np.ndarray,
                       cases: tuple[np.ndarray, np.ndarray, np.ndarray], n_cases: int,
                       resamples: int = 200, seed: int = 0) -> float:
    """The standard error of (FD(real, second) - FD(real, first)) / FD(real, first) over the
    evaluation's cases: a paired bootstrap that draws `n_cases` cases with replacement and keeps
    every feature row of a drawn case (`cases`: each set's row -> case) in all three sets. FID
    and FVD are set-level, so this is the only error bar they have; with a handful of cases it
    is rough, but it tells a change within noise from one beyond it. NaN below 2 cases."""
    if n_cases < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    rows = [[np.flatnonzero(case_of == c) for c in range(n_cases)] for case_of in cases]
    changes = []
    for _ in range(resamples):
        drawn = rng.integers(0, n_cases, n_cases)
        r, f, s = (x[np.concatenate([by_case[c] for c in drawn])]
                   for x, by_case in zip((real, first, second), rows, strict=True))
        if min(len(r), len(f), len(s)) < 2:
            continue
        base = frechet_distance(r, f)
        if base > 0:
            changes.append((frechet_distance(r, s) - base) / base)
    return float(np.std(changes, ddof=1)) if len(changes) >= 2 else float("nan")
