"""Pictures people look at: labelled rows of frames, written as a PNG (atomically)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from components.atomic import atomic_path

LABEL_WIDTH = 150


def image_grid(rows: list[np.ndarray], labels: list[str], path: str | Path,
               zoom: int = 2) -> Path:
    """Each row a (N, H, W, 3) uint8 array, shown left to right under its label."""
    width = max(len(r) for r in rows)
    lines = []
    for frames, label in zip(rows, labels, strict=True):
        h, w = frames.shape[1:3]
        line = np.zeros((h * zoom, LABEL_WIDTH + width * w * zoom, 3), np.uint8)
        for i, frame in enumerate(frames):
            big = cv2.resize(frame, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
            line[:, LABEL_WIDTH + i * w * zoom:LABEL_WIDTH + (i + 1) * w * zoom] = big
        for k, text in enumerate(label.split("\n")):
            cv2.putText(line, text, (4, 16 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        (255, 255, 255), 1, cv2.LINE_AA)
        lines.append(line)
    return write_png(path, np.concatenate(lines))


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """An RGB uint8 image as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(cv2.imencode(".png", rgb[..., ::-1])[1].tobytes())
    return path
