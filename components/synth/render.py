"""Draws a shaded face from projected landmarks with OpenCV.

The drawing is supersampled and shaded (lit side, darker rim, eye sockets, nose shadow) so that a
real face detector (dlib's HOG) finds the faces; colours come from the identity's `Look` only,
never from the emotion.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from components.synth.exact import elementwise, hypot
from components.synth.face_model import INNER_LIPS, OUTER_LIPS

SUPERSAMPLE = 2
_ARC = np.linspace(0.0, np.pi, 13)


@dataclass(frozen=True)
class Look:
    """An identity's appearance (RGB colours in 0..255)."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    shirt: tuple[float, float, float]
    background_top: tuple[float, float, float]
    background_bottom: tuple[float, float, float]
    hair_height: float  # top of the hair above the temples, face units
    hair_length: float  # how far down the sides the hair falls
    hairline: float  # forehead height above the temples
    light: float  # -1: lit from the image's left, +1: from its right


SKIN_TONES = [(241, 200, 170), (224, 172, 140), (198, 140, 105), (160, 105, 75), (110, 72, 52),
              (232, 190, 160), (185, 128, 95)]
HAIR_COLOURS = [(30, 24, 20), (70, 45, 30), (120, 80, 45), (200, 165, 100), (140, 60, 30),
                (160, 160, 160), (15, 15, 15)]
IRIS_COLOURS = [(70, 45, 25), (60, 100, 140), (70, 110, 70), (40, 30, 25)]


def random_look(rng: np.random.Generator) -> Look:
    pick = lambda palette: palette[rng.integers(len(palette))]  # noqa: E731
    jitter = lambda c, s: tuple(float(np.clip(v + rng.normal(0, s), 0, 255)) for v in c)  # noqa: E731
    skin = jitter(pick(SKIN_TONES), 6)
    return Look(
        skin=skin,
        hair=jitter(pick(HAIR_COLOURS), 8),
        iris=pick(IRIS_COLOURS),
        lips=tuple(float(v) for v in np.clip(np.array(skin) * (0.85, 0.55, 0.55), 0, 255)),
        shirt=tuple(float(v) for v in rng.uniform(30, 220, size=3)),
        background_top=tuple(float(v) for v in rng.uniform(60, 220, size=3)),
        background_bottom=tuple(float(v) for v in rng.uniform(40, 200, size=3)),
        hair_height=rng.uniform(0.46, 0.62),
        hair_length=rng.uniform(-0.15, 0.55),
        hairline=rng.uniform(0.26, 0.36),
        light=rng.uniform(-1, 1),
    )


def head_outline_points(look: Look) -> dict[str, np.ndarray]:
    """Render-only 3-D points (face units) that move with the head: hair, hairline, ears, neck."""
    temple_y = -0.231
    cos, sin = elementwise(math.cos, _ARC), elementwise(math.sin, _ARC)
    hair_top = np.column_stack([0.56 * cos, temple_y - look.hair_height * sin, -0.2 * sin - 0.25])
    sides = np.array([[-0.58, look.hair_length, -0.35], [0.58, look.hair_length, -0.35]])
    hair = np.vstack([sides[1:], hair_top, sides[:1]])
    hairline = np.column_stack([0.5 * cos, temple_y - look.hairline * sin, 0.08 * sin - 0.05])
    ear = np.array([[0.49, -0.22], [0.56, -0.26], [0.59, -0.15], [0.56, 0.0], [0.5, 0.06]])
    ears = [np.column_stack([ear * [sx, 1], np.full(5, -0.38)]) for sx in (1, -1)]
    neck = np.array([[-0.2, 0.4, -0.3], [0.2, 0.4, -0.3], [0.22, 1.3, -0.3], [-0.22, 1.3, -0.3]])
    return {"hair": hair, "hairline": hairline, "ear_r": ears[0], "ear_l": ears[1], "neck": neck}


@contextmanager
def cpu_independent_opencv() -> Iterator[None]:
    """Draw with OpenCV's baseline (SSE2/SSE3) code, the same on every x86-64 CPU: the AVX2 and
    AVX-512 kernels it picks at run time (and Intel IPP's) round blurs and resizes differently.
    The settings are restored after. The thread count is left alone: these operations give the
    same pixels on 1, 2 or 8 threads (measured), and `cv2.setNumThreads` in a forked pool worker
    whose parent had used OpenCV's thread pool hangs in pthread_cond_destroy."""
    optimized, ipp = cv2.useOptimized(), cv2.ipp.useIPP()
    opencl = cv2.ocl.useOpenCL()
    cv2.setUseOptimized(False)  # also switches IPP and OpenCL off
    try:
        yield
    finally:
        cv2.setUseOptimized(optimized)
        cv2.ipp.setUseIPP(ipp)
        cv2.ocl.setUseOpenCL(opencl)


def background(look: Look, size: int) -> np.ndarray:
    """A vertical two-colour gradient, fixed per identity, at the supersampled size."""
    size *= SUPERSAMPLE
    ramp = np.linspace(0, 1, size)[:, None, None]
    top, bottom = np.array(look.background_top), np.array(look.background_bottom)
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (size, size, 3)).astype(np.float32)


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(points * 16).astype(np.int32)  # 4 fractional bits for anti-aliased drawing


def _colour(value) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(value))


def _fill(img: np.ndarray, points: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_poly(points)], _colour(colour), cv2.LINE_AA, shift=4)


def _line(img: np.ndarray, points: np.ndarray, colour, width: int, closed: bool = False) -> None:
    cv2.polylines(img, [_poly(points)], closed, _colour(colour), width, cv2.LINE_AA, shift=4)


def _paint_inside(img: np.ndarray, polygon: np.ndarray, paint) -> None:
    """Let `paint(canvas, offset)` draw on a copy of the polygon's bounding box, then keep only
    what falls inside the polygon (eyes, the open mouth)."""
    x0, y0 = np.maximum(np.floor(polygon.min(0)).astype(int) - 2, 0)
    x1, y1 = np.ceil(polygon.max(0)).astype(int) + 3
    roi = img[y0:y1, x0:x1]
    if roi.size == 0:
        return
    offset = np.array([x0, y0], np.float64)
    mask = np.zeros(roi.shape[:2], np.float32)
    _fill(mask, polygon - offset, 1.0)
    canvas = roi.copy()
    paint(canvas, offset)
    roi += (canvas - roi) * mask[..., None]


def render_frame(
    landmarks: np.ndarray,
    outline: dict[str, np.ndarray],
    body: np.ndarray,
    look: Look,
    backdrop: np.ndarray,
    unit: float,
) -> np.ndarray:
    """One RGB frame (size x size, uint8).

    `landmarks` (68, 2) and `outline` are projected pixel coordinates at the output size; `body`
    (4, 2) the shoulders' polygon; `backdrop` comes from `background`; `unit` is the size of one
    face unit in output pixels.
    """
    s = SUPERSAMPLE
    size = backdrop.shape[0] // s
    lm, out = landmarks * s, {k: v * s for k, v in outline.items()}
    img = backdrop.copy()
    skin = np.array(look.skin, np.float32)
    u = unit * s

    _fill(img, body * s, look.shirt)
    _fill(img, out["neck"], skin * 0.78)
    _fill(img, out["hair"], look.hair)
    for ear in ("ear_r", "ear_l"):
        _fill(img, out[ear], skin * 0.85)

    # Skin: a lit side, a darker rim, soft eye sockets and nose and cheek shadows. The blurs
    # run at a quarter of the resolution: they are smooth anyway.
    face = np.vstack([lm[0:17], out["hairline"]])
    mask = np.zeros(img.shape[:2], np.float32)
    _fill(mask, face, 1.0)
    q, small = 4, (img.shape[1] // 4, img.shape[0] // 4)
    rim = cv2.GaussianBlur(cv2.resize(mask, small, interpolation=cv2.INTER_AREA), (0, 0),
                           sigmaX=0.09 * u / q)
    shade = np.ones(img.shape[:2], np.float32)
    for eye in (range(36, 42), range(42, 48)):
        centre = lm[list(eye)].mean(0)
        cv2.ellipse(shade, tuple(np.round(centre + [0, -0.02 * u]).astype(int)),
                    (int(0.12 * u), int(0.07 * u)), 0, 0, 360, 0.72, -1, cv2.LINE_AA)
    side = 1 if look.light < 0 else -1  # the nose casts its shadow away from the light
    _line(shade, lm[27:31] + [side * 0.035 * u, 0], 0.75, max(1, int(0.04 * u)))
    _line(shade, lm[31:36] + [0, 0.02 * u], 0.7, max(1, int(0.035 * u)))
    _line(shade, lm[5:12] + [0, -0.04 * u], 0.88, max(1, int(0.05 * u)))  # under the cheeks
    shade = cv2.GaussianBlur(cv2.resize(shade, small, interpolation=cv2.INTER_AREA), (0, 0),
                             sigmaX=0.03 * u / q)
    xs = (np.arange(small[0], dtype=np.float32) * q - lm[27, 0]) / u
    light = 1.0 + 0.18 * look.light * np.clip(xs, -0.6, 0.6)[None, :]
    tone = cv2.resize((0.7 + 0.3 * rim) * light * shade, (img.shape[1], img.shape[0]),
                      interpolation=cv2.INTER_LINEAR)
    x0, y0 = np.maximum(np.floor(face.min(0)).astype(int), 0)
    x1, y1 = np.ceil(face.max(0)).astype(int) + 1
    roi, m = img[y0:y1, x0:x1], mask[y0:y1, x0:x1, None]
    roi += (skin * tone[y0:y1, x0:x1, None] - roi) * m

    _line(img, lm[27:31], skin * 1.08, max(1, int(0.02 * u)))  # bridge highlight
    _line(img, lm[31:36], skin * 0.45, max(1, int(0.018 * u)))  # nostrils

    for eye in (range(36, 42), range(42, 48)):
        pts = lm[list(eye)]

        def paint_eye(canvas, offset, pts=pts):
            local = pts - offset
            _fill(canvas, local, (235, 232, 225))
            centre = tuple(np.round(local.mean(0) * 16).astype(int))
            radius = 0.45 * hypot(*(local[3] - local[0]))
            cv2.circle(canvas, centre, int(radius * 16), _colour(look.iris), -1, cv2.LINE_AA,
                       shift=4)
            cv2.circle(canvas, centre, int(radius * 0.45 * 16), (10, 10, 10), -1, cv2.LINE_AA,
                       shift=4)

        _paint_inside(img, pts, paint_eye)
        _line(img, pts[[0, 1, 2, 3]], (25, 20, 20), max(1, int(0.025 * u)))  # upper lid
        _line(img, pts[[3, 4, 5, 0]], skin * 0.6, max(1, int(0.012 * u)))

    brow = np.array(look.hair) * 0.8
    for start in (17, 22):
        _line(img, lm[start:start + 5], brow, max(1, int(0.045 * u)))

    _fill(img, lm[list(OUTER_LIPS)], look.lips)
    inner = lm[list(INNER_LIPS)]

    def paint_mouth(canvas, offset):
        local = inner - offset
        _fill(canvas, local, (60, 20, 25))
        teeth_top = local[[0, 1, 2, 3, 4]]
        _fill(canvas, np.vstack([teeth_top, teeth_top[::-1] + [0, 0.05 * u]]), (235, 230, 220))

    _paint_inside(img, inner, paint_mouth)
    _line(img, inner[[0, 1, 2, 3, 4]], np.array(look.lips) * 0.5, max(1, int(0.012 * u)))

    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(img, 0, 255).astype(np.uint8)
