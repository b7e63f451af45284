"""A 3-D mean face in the iBUG 68-landmark order, in face units (jaw width = 1, x right, y down,
z towards the camera): what head-pose estimation on real footage fits against, and the shape the
procedural dataset starts from. It lives here, not in `components/synth/`, so the features of
real data do not depend on the synthetic data generator."""

from __future__ import annotations

import numpy as np

# Mean shape measured with dlib's 68-point predictor on skimage's `astronaut` photo, rotated
# level, mirror-symmetrised, inner lips closed and mouth corners lowered to a neutral pose.
TEMPLATE_2D = np.array([
    [-0.5, -0.231], [-0.484, -0.102], [-0.468, 0.016], [-0.446, 0.146], [-0.403, 0.264],
    [-0.333, 0.366], [-0.232, 0.453], [-0.124, 0.528], [0.0, 0.545], [0.124, 0.528],
    [0.232, 0.453], [0.333, 0.366], [0.403, 0.264], [0.446, 0.146], [0.468, 0.016],
    [0.484, -0.102], [0.5, -0.231],
    [-0.425, -0.333], [-0.366, -0.403], [-0.28, -0.414], [-0.194, -0.403], [-0.108, -0.376],
    [0.108, -0.376], [0.194, -0.403], [0.28, -0.414], [0.366, -0.403], [0.425, -0.333],
    [0.0, -0.274], [0.0, -0.177], [0.0, -0.091], [0.0, -0.006],
    [-0.108, 0.043], [-0.054, 0.059], [0.0, 0.07], [0.054, 0.059], [0.108, 0.043],
    [-0.323, -0.263], [-0.269, -0.306], [-0.194, -0.306], [-0.135, -0.241], [-0.205, -0.236],
    [-0.274, -0.236],
    [0.135, -0.241], [0.194, -0.306], [0.269, -0.306], [0.323, -0.263], [0.274, -0.236],
    [0.205, -0.236],
    [-0.232, 0.17], [-0.156, 0.14], [-0.065, 0.129], [0.0, 0.145], [0.065, 0.129], [0.156, 0.14],
    [0.232, 0.17], [0.161, 0.248], [0.07, 0.296], [0.0, 0.307], [-0.07, 0.296], [-0.161, 0.248],
    [-0.205, 0.175], [-0.064, 0.205], [0.0, 0.216], [0.064, 0.205], [0.205, 0.175],
    [0.064, 0.205], [0.0, 0.216], [-0.064, 0.205],
])

JAW, BROWS, NOSE_BRIDGE, NOSTRILS = range(0, 17), range(17, 27), range(27, 31), range(31, 36)
EYE_R, EYE_L, OUTER_LIPS, INNER_LIPS = range(36, 42), range(42, 48), range(48, 60), range(60, 68)
UPPER_LIDS, LOWER_LIDS = [37, 38, 43, 44], [41, 40, 47, 46]


def _depth(points: np.ndarray) -> np.ndarray:
    """A plausible depth per landmark: a curved face with the nose standing out."""
    x = points[:, 0]
    z = 0.1 - 1.6 * x**2
    z[list(NOSE_BRIDGE)] = [0.12, 0.18, 0.24, 0.3]
    z[list(NOSTRILS)] = [0.14, 0.18, 0.2, 0.18, 0.14]
    z[list(OUTER_LIPS) + list(INNER_LIPS)] += 0.05
    return z


TEMPLATE = np.column_stack([TEMPLATE_2D, _depth(TEMPLATE_2D)])
