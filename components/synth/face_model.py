"""A parametric 68-landmark face: identity shape, emotion expression, speaking habits, head pose.

Landmarks follow the iBUG 68-point order (as dlib and face-alignment). Shapes live in "face units"
(jaw width = 1, x right, y down, z towards the camera). A face at frame t is

    landmarks(t) = project(R(pose(t)) @ (identity_shape + expression(t) @ BASIS))

where `expression(t)` is a vector over `CONTROLS` (an emotion's static pose scaled by its
intensity level, plus speech-driven mouth, brow and blink dynamics shaped by the identity's
speaking habits). The expression vector is what the generator stores as ground-truth
"expression parameters".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from components.face_template import (
    BROWS,
    EYE_L,
    EYE_R,
    INNER_LIPS,
    JAW,
    LOWER_LIDS,
    NOSTRILS,
    OUTER_LIPS,
    TEMPLATE,
    UPPER_LIDS,
)
from components.synth.exact import elementwise, matmul, transform, weighted_sum

CONTROLS = (
    "jaw_open", "lip_stretch", "lip_corner_up", "lip_corner_asym", "upper_lip_raise",
    "lip_press", "lip_pucker", "brow_raise", "brow_inner_raise", "brow_lower",
    "eye_open", "blink", "nose_wrinkle", "cheek_raise",
)


def _basis() -> np.ndarray:
    """Per-control landmark displacements (n_controls, 68, 3) in face units at value 1."""
    basis = {name: np.zeros((68, 3)) for name in CONTROLS}
    side = np.sign(TEMPLATE[:, 0])  # -1 on the image's left, +1 on its right

    b = basis["jaw_open"]
    b[[55, 56, 57, 58, 59], 1] = 0.16
    b[[65, 66, 67], 1] = 0.18
    b[[48, 54, 60, 64], 1] = 0.06
    b[list(JAW), 1] = [0, 0, 0, 0, 0.02, 0.04, 0.07, 0.1, 0.12, 0.1, 0.07, 0.04, 0.02, 0, 0, 0, 0]

    b = basis["lip_stretch"]
    b[[48, 54, 60, 64], 0] = 0.06 * side[[48, 54, 60, 64]]
    b[[49, 53, 55, 59, 61, 63, 65, 67], 0] = 0.025 * side[[49, 53, 55, 59, 61, 63, 65, 67]]

    b = basis["lip_corner_up"]
    b[[48, 54, 60, 64], 1] = -0.05
    b[[49, 53, 55, 59], 1] = -0.02

    b = basis["lip_corner_asym"]  # one-sided smirk (contempt)
    b[[54, 64], :2] = [0.025, -0.05]
    b[[53, 55], 1] = -0.02

    b = basis["upper_lip_raise"]
    b[[49, 53], 1], b[[50, 51, 52], 1], b[[61, 62, 63], 1] = -0.03, -0.05, -0.04
    b[list(NOSTRILS), 1] = -0.015

    b = basis["lip_press"]
    b[[49, 50, 51, 52, 53], 1] = 0.025
    b[[55, 56, 57, 58, 59], 1] = -0.025

    b = basis["lip_pucker"]
    b[[48, 54, 60, 64], 0] = -0.06 * side[[48, 54, 60, 64]]
    b[[49, 53, 55, 59], 0] = -0.03 * side[[49, 53, 55, 59]]
    b[list(OUTER_LIPS), 2] = 0.05

    b = basis["brow_raise"]
    b[list(BROWS), 1] = -0.06
    b[UPPER_LIDS, 1] = -0.01

    b = basis["brow_inner_raise"]
    b[[19, 24], 1], b[[20, 23], 1], b[[21, 22], 1] = -0.02, -0.045, -0.065
    b[[17, 26], 1] = 0.01

    b = basis["brow_lower"]  # lowered and drawn together (anger, disgust)
    b[list(BROWS), 1] = 0.035
    b[[21, 22], 1] = 0.055
    b[[20, 21, 22, 23], 0] = -0.025 * side[[20, 21, 22, 23]]

    b = basis["eye_open"]
    b[UPPER_LIDS, 1] = -0.025
    b[LOWER_LIDS, 1] = 0.01

    b = basis["blink"]  # upper lids meet the lower ones
    b[UPPER_LIDS, 1] = TEMPLATE[LOWER_LIDS, 1] - TEMPLATE[UPPER_LIDS, 1] - 0.004

    b = basis["nose_wrinkle"]
    b[list(NOSTRILS), 1] = -0.02
    b[[28, 29], 1] = 0.01

    b = basis["cheek_raise"]
    b[LOWER_LIDS, 1] = -0.022
    b[[2, 3, 13, 14], 1] = -0.01
    return np.stack([basis[name] for name in CONTROLS])


BASIS = _basis()
N_CONTROLS = len(CONTROLS)


def controls(**values: float) -> np.ndarray:
    vec = np.zeros(N_CONTROLS)
    for name, value in values.items():
        vec[CONTROLS.index(name)] = value
    return vec


@dataclass(frozen=True)
class EmotionStyle:
    """How an emotion shows at full intensity: a static expression, head-motion changes and a
    speech prosody. Intensity levels scale the departure from neutral."""

    expression: np.ndarray
    head_motion_gain: float
    head_pitch_deg: float
    head_roll_deg: float
    mouth_gain: float
    brow_speech_gain: float
    rate: float  # speaking-rate factor
    pitch: float  # pitch offset on espeak's 0-99 scale
    pitch_range: float  # pitch-range factor
    volume: float  # amplitude factor


EMOTION_STYLES: dict[str, EmotionStyle] = {
    "neutral": EmotionStyle(controls(), 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0, 1.0, 1.0),
    "happy": EmotionStyle(
        controls(lip_corner_up=0.9, lip_stretch=0.5, cheek_raise=0.8, eye_open=-0.25, jaw_open=0.1),
        1.25, -2.0, 0.0, 1.1, 1.2, 1.08, 8, 1.45, 1.1),
    "angry": EmotionStyle(
        controls(brow_lower=1.0, lip_press=0.8, eye_open=-0.15, nose_wrinkle=0.25),
        1.4, 3.0, 0.0, 1.25, 0.6, 1.12, 4, 1.3, 1.45),
    "sad": EmotionStyle(
        controls(lip_corner_up=-0.7, brow_inner_raise=0.9, eye_open=-0.35),
        0.55, 9.0, 2.0, 0.7, 0.5, 0.8, -8, 0.6, 0.7),
    "surprised": EmotionStyle(
        controls(brow_raise=1.0, eye_open=0.9, jaw_open=0.3),
        1.2, -5.0, 0.0, 1.05, 1.6, 1.0, 12, 1.6, 1.2),
    "fear": EmotionStyle(
        controls(brow_raise=0.5, brow_inner_raise=0.7, eye_open=0.7, lip_stretch=0.8,
                 jaw_open=0.12),
        1.1, 2.0, 0.0, 0.9, 1.3, 1.2, 10, 0.9, 0.9),
    "disgusted": EmotionStyle(
        controls(upper_lip_raise=1.0, nose_wrinkle=0.9, brow_lower=0.5, eye_open=-0.35,
                 lip_corner_up=-0.3),
        0.9, 0.0, -3.0, 0.9, 0.8, 0.9, -4, 1.0, 1.0),
    "contempt": EmotionStyle(
        controls(lip_corner_asym=1.0, eye_open=-0.15, brow_raise=0.2),
        0.8, -3.0, 4.0, 0.85, 0.7, 0.92, -2, 0.8, 0.9),
}

LEVEL_SCALE = {1: 0.4, 2: 0.7, 3: 1.0}


def emotion_at_level(emotion: str, level: int) -> EmotionStyle:
    """The emotion's style with every departure from neutral scaled by the intensity level."""
    full, neutral, k = EMOTION_STYLES[emotion], EMOTION_STYLES["neutral"], LEVEL_SCALE[level]
    mix = lambda a, b: b + k * (a - b)  # noqa: E731
    return EmotionStyle(
        expression=k * full.expression,
        **{name: mix(getattr(full, name), getattr(neutral, name))
           for name in EmotionStyle.__dataclass_fields__ if name != "expression"},
    )


@dataclass(frozen=True)
class SpeakingHabits:
    """Per-identity manner: how strongly emotions show, how much the mouth opens, how the head
    moves, how often the eyes blink and how much the brows follow speech."""

    expressiveness: float
    mouth_gain: float
    head_motion_deg: float
    head_motion_hz: float
    head_nod_gain: float
    blink_per_s: float
    brow_mobility: float


def identity_shape(rng: np.random.Generator) -> np.ndarray:
    """A neutral 68x3 shape with this identity's proportions."""
    shape = TEMPLATE.copy()
    u = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
    shape[:, 0] *= u(0.92, 1.08)
    shape[:, 1] *= u(0.92, 1.1)
    shape[3:14, 0] *= u(0.9, 1.06)  # jaw width
    for eye in (EYE_R, EYE_L):
        idx = list(eye)
        centre = shape[idx, :2].mean(0)
        shape[idx, :2] = centre + (shape[idx, :2] - centre) * u(0.85, 1.15)
    shape[36:48, 0] += np.where(shape[36:48, 0] < 0, -1, 1) * u(-0.02, 0.025)
    shape[list(BROWS), 1] += u(-0.03, 0.03)
    nose = list(range(28, 36))
    shape[nose, 1] = shape[27, 1] + (shape[nose, 1] - shape[27, 1]) * u(0.9, 1.12)
    shape[list(NOSTRILS), 0] *= u(0.85, 1.25)
    mouth = list(OUTER_LIPS) + list(INNER_LIPS)
    centre = shape[mouth, :2].mean(0)
    shape[mouth, 0] = centre[0] + (shape[mouth, 0] - centre[0]) * u(0.85, 1.15)
    lip = u(-0.015, 0.02)
    shape[[49, 50, 51, 52, 53], 1] -= lip
    shape[[55, 56, 57, 58, 59], 1] += lip
    shape[mouth, 1] += u(-0.02, 0.02)
    return shape


def speaking_habits(rng: np.random.Generator) -> SpeakingHabits:
    return SpeakingHabits(
        expressiveness=rng.uniform(0.7, 1.3),
        mouth_gain=rng.uniform(0.6, 1.4),
        head_motion_deg=rng.uniform(2.0, 9.0),
        head_motion_hz=rng.uniform(0.15, 0.7),
        head_nod_gain=rng.uniform(0.0, 6.0),
        blink_per_s=rng.uniform(0.1, 0.5),
        brow_mobility=rng.uniform(0.0, 0.5),
    )


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """`np.convolve(x, hann, "same")` for an odd `width`, without BLAS (whose dot product rounds
    per CPU model): the shifted copies are added in a fixed order."""
    if width <= 1:
        return x
    m = width + 2  # np.hanning(m)[1:-1], its cosines from the C library
    kernel = (0.5 + 0.5 * elementwise(math.cos, np.pi * np.arange(1 - m, m, 2) / (m - 1)))[1:-1]
    kernel = kernel / kernel.sum()
    n, half = len(x), (width - 1) // 2
    padded = np.concatenate([np.zeros(width), np.asarray(x, np.float64), np.zeros(width)])
    shifted = [padded[width + half - k:width + half - k + n] for k in range(width)]
    return weighted_sum(kernel, shifted)


def expression_track(
    style: EmotionStyle,
    habits: SpeakingHabits,
    energy: np.ndarray,
    brightness: np.ndarray,
    fps: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-frame expression controls (T, N_CONTROLS) for one clip.

    The emotion's static expression is scaled by the identity's expressiveness and varies a
    little from clip to clip. `energy` (0..1, speech loudness per frame) opens the jaw and lifts
    the brows; `brightness` (-1..1, spectral tilt per frame) spreads the lips on bright sounds
    and rounds them on dark ones; blinks arrive as a Poisson process at the identity's rate.
    """
    n = len(energy)
    static = habits.expressiveness * style.expression
    static = static + rng.normal(0, 0.05, N_CONTROLS) * (static != 0)
    track = np.tile(static, (n, 1))
    col = CONTROLS.index
    # math.pow, not `** 0.8`: numpy's power kernel differs on AVX-512 machines
    talk = habits.mouth_gain * style.mouth_gain * elementwise(lambda v: math.pow(v, 0.8),
                                                              _smooth(energy, 3))
    track[:, col("jaw_open")] += 0.6 * talk
    track[:, col("lip_stretch")] += 0.35 * talk * np.clip(brightness, 0, 1)
    track[:, col("lip_pucker")] += 0.5 * talk * np.clip(-brightness, 0, 1)
    brow = habits.brow_mobility * style.brow_speech_gain * _smooth(energy, 9)
    track[:, col("brow_raise")] += brow

    blink = np.zeros(n)
    profile = np.array([0.5, 1.0, 1.0, 0.6, 0.25])
    t = rng.exponential(1.0 / habits.blink_per_s) * rng.uniform(0.2, 1.0)
    while (frame := int(t * fps)) < n:
        span = min(len(profile), n - frame)
        blink[frame:frame + span] = np.maximum(blink[frame:frame + span], profile[:span])
        t += max(0.4, rng.exponential(1.0 / habits.blink_per_s))
    track[:, col("blink")] = blink
    return track


def head_pose_track(
    style: EmotionStyle, habits: SpeakingHabits, energy: np.ndarray, fps: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-frame head pose (T, 3): yaw, pitch, roll in degrees."""
    n = len(energy)
    t = np.arange(n) / fps
    amp = habits.head_motion_deg * style.head_motion_gain
    pose = np.zeros((n, 3))
    for axis, weight in enumerate((1.0, 0.6, 0.4)):
        f1, f2 = habits.head_motion_hz * rng.uniform(0.8, 1.25, size=2) * (1.0, 2.3)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        pose[:, axis] = amp * weight * (0.7 * elementwise(math.sin, 2 * np.pi * f1 * t + p1)
                                        + 0.3 * elementwise(math.sin, 2 * np.pi * f2 * t + p2))
    nod = np.diff(_smooth(energy, 5), prepend=energy[:1])
    pose[:, 1] += habits.head_nod_gain * style.head_motion_gain * _smooth(nod, 5) * 4
    pose[:, 1] += style.head_pitch_deg
    pose[:, 2] += style.head_roll_deg
    return pose


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix for degrees of yaw (about y; positive turns the nose to the image's
    right), pitch (about x; positive looks down) and roll (about z)."""
    y, p, r = (math.radians(float(v)) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return matmul(matmul(rz, rx), ry)


PIVOT = np.array([0.0, 0.35, -0.45])  # roughly the top of the neck, behind the jaw


def pose_points(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Rotate 3-D face-unit points (N, 3) by a head pose about the neck pivot."""
    return transform(points - PIVOT, rotation(*pose)) + PIVOT


def deform(shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """`shape + expression @ BASIS`: the neutral shape (68, 3) moved by the expression controls."""
    return shape + weighted_sum(expression, BASIS)
