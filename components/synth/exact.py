"""Arithmetic whose result does not depend on the CPU it runs on.

numpy picks some kernels at run time by CPU (AVX-512, AVX2+FMA or SSE: `power`, `exp`, `log`,
complex `abs`, float32 `sin`/`cos`), and OpenBLAS (behind `@`, `dot`, `tensordot`, `convolve`,
`linalg.norm`) picks its kernels by CPU model too; they round differently in the last bit, and a
last-bit difference that reaches a rounding step (a pixel, an int16 sample, a float32) changes
bytes. The generator therefore sticks to IEEE add/subtract/multiply/divide/sqrt (exactly rounded
whatever the vector width), the C library's scalar functions through `math`, and reductions
written out in a fixed order; and it snaps every float it stores or draws to a fixed grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def snap(x, bits: int) -> np.ndarray:
    """`x` rounded to the nearest multiple of 2**-bits (ties to even), as float64. For the ranges
    stored here the result is also exact in float32."""
    scale = float(2**bits)
    return np.round(np.asarray(x, np.float64) * scale) / scale


def elementwise(fn: Callable[[float], float], x) -> np.ndarray:
    """`fn` (a scalar `math` function) applied to every element, as float64: the C library's
    scalar code, not numpy's CPU-dispatched SIMD kernels. Meant for small arrays."""
    a = np.asarray(x, np.float64)
    return np.array([fn(v) for v in a.ravel().tolist()], np.float64).reshape(a.shape)


def weighted_sum(weights, arrays) -> np.ndarray:
    """sum_k weights[k] * arrays[k], added in order k = 0, 1, ... (no BLAS)."""
    arrays = np.asarray(arrays, np.float64)
    total = np.zeros(arrays.shape[1:])
    for w, a in zip(np.asarray(weights, np.float64).tolist(), arrays, strict=True):
        total = total + w * a
    return total


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`points @ matrix.T` for row vectors (N, d) and a (d, d) matrix, summed in a fixed order."""
    points, matrix = np.asarray(points, np.float64), np.asarray(matrix, np.float64)
    return weighted_sum(np.ones(points.shape[1]),
                        [points[:, j:j + 1] * matrix[:, j] for j in range(points.shape[1])])


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b` for small 2-D matrices, summed in a fixed order."""
    return transform(np.asarray(b, np.float64).T, np.asarray(a, np.float64)).T


def hypot(dx: float, dy: float) -> float:
    return math.sqrt(float(dx) * float(dx) + float(dy) * float(dy))
