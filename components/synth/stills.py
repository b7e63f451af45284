"""Still frames of procedural identities that appear nowhere else in the dataset.

The embedded dataset has a handful of identities; a model trained on six learns those six
rather than how to copy a face it has never seen (measured: the VAE's held-out PSNR is 16 dB
from six identities' crops, the stage-1 denoiser draws a training identity for a held-out
reference). Peers start from SD and AnimateAnyone weights that saw thousands of faces; the
embedded profile instead shows its VAE and its stage-1 denoiser hundreds of procedural identities
drawn from the same generator: each a few stills with a random emotion at a random strength, an
open or closed mouth and a random head pose.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from components.config import MEAD_EMOTIONS
from components.features.crop import crop_frame, smooth_boxes, to_crop, union_box
from components.synth import face_model as fm
from components.synth.generate import make_identity, render_clip

POSE_STD_DEG = (4.0, 3.0, 2.0)  # yaw, pitch, roll: about the dataset clips' own head motion


def procedural_faces(n_identities: int, per_identity: int, seed: int,
                     frame_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per identity: frames (K, frame_size, frame_size, 3) uint8 and their 68 landmarks
    (K, 68, 2) in frame pixels. A pure function of the arguments."""
    for index in range(n_identities):
        identity = make_identity(seed, index)
        rng = np.random.default_rng([seed, index])
        emotions = rng.integers(len(MEAD_EMOTIONS), size=per_identity)
        expression = np.stack([fm.emotion_at_level(MEAD_EMOTIONS[e], 3).expression
                               for e in emotions]) * rng.uniform(0, 1, (per_identity, 1))
        expression[:, fm.CONTROLS.index("jaw_open")] += rng.uniform(0, 0.6, per_identity)
        pose = rng.normal(0, POSE_STD_DEG, (per_identity, 3))
        yield render_clip(identity, expression, pose, frame_size)


def face_crops(n: int, seed: int, frame_size: int, crop_size: int,
               crop_scale: float) -> np.ndarray:
    """`n` crops (n, crop_size, crop_size, 3), each cut around its own landmarks as the
    features stage cuts (`crop_scale` x their extent)."""
    crops: list[np.ndarray] = []
    per_identity = 6
    for frames, landmarks in procedural_faces(-(-n // per_identity), per_identity, seed,
                                              frame_size):
        boxes = smooth_boxes(landmarks, crop_scale, 1)
        crops += [crop_frame(f, b, crop_size) for f, b in zip(frames, boxes, strict=True)]
    return np.stack(crops[:n])


def still_shots(frames: np.ndarray, landmarks: np.ndarray, crop_scale: float, size: int):
    """One identity's stills in one square box around all their faces (a still camera, as the
    generator's crop of a clip): frames (K, size, size, 3), landmarks (K, 68, 2) in the crop."""
    box = union_box(smooth_boxes(landmarks, crop_scale, 1))
    return (np.stack([crop_frame(f, box, size) for f in frames]),
            to_crop(landmarks, box, size))
