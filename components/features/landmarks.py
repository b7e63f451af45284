"""68-point landmarks (iBUG order) per frame, from a pluggable backend.

- `sidecar`: the generator's ground truth (embedded dataset).
- `dlib`: dlib's HOG detector + 68-point predictor (offline; Debian `libdlib-data` ships it).
- `face_alignment`: FAN (the full profile), weights from a local torch hub folder; faces are
  located with dlib's detector and passed in, so the s3fd detector only has to load.

A frame with no face gets NaN landmarks; the caller decides what too many missing faces means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.errors import SvpError

FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
S3FD_WEIGHTS = "s3fd-619a316812.pth"


def from_sidecar(path: str | Path, n_frames: int) -> np.ndarray:
    landmarks = np.load(path, allow_pickle=False)["landmarks"].astype(np.float32)
    if len(landmarks) < n_frames:
        raise SvpError(f"{path}: sidecar has {len(landmarks)} frames, the video {n_frames}")
    return landmarks[:n_frames]


class DlibLandmarks:
    """HOG detection (upsampled once) and the 68-point shape predictor; a frame where the
    detector misses reuses the previous frame's box, as trackers do."""

    def __init__(self, predictor_path: str | Path):
        import dlib

        if not Path(predictor_path).is_file():
            raise SvpError(f"{predictor_path}: dlib 68-point predictor not found "
                           "(apt-get install libdlib-data, or set features.dlib_predictor)")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path))
        self._rectangle = dlib.rectangle

    def boxes(self, frames: np.ndarray) -> list[tuple[int, int, int, int] | None]:
        """Per frame the largest face box (left, top, right, bottom), or None."""
        return face_boxes(self.detector, frames)

    def __call__(self, frames: np.ndarray,
                 boxes: list[tuple[int, int, int, int] | None] | None = None) -> np.ndarray:
        """Landmarks in the frames' `boxes` (found here if not given)."""
        out = np.full((len(frames), 68, 2), np.nan, np.float32)
        previous = None
        for t, (frame, box) in enumerate(zip(frames, self.boxes(frames) if boxes is None else boxes,
                                                      strict=True)):
            box = box or previous
            if box is None:
                continue
            shape = self.predictor(frame, self._rectangle(*box))
            out[t] = [(p.x, p.y) for p in shape.parts()]
            previous = box
        return out


def face_boxes(detector, frames: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """Per frame the largest box dlib's HOG `detector` finds (upsampled once), or None."""
    boxes = []
    for frame in frames:
        found = detector(frame, 1)
        if found:
            best = max(found, key=lambda r: r.width() * r.height())
            boxes.append((best.left(), best.top(), best.right(), best.bottom()))
        else:
            boxes.append(None)
    return boxes


class FaceAlignmentLandmarks:
    """face-alignment's FAN with weights from `<hub_dir>/checkpoints/` (never downloaded)."""

    def __init__(self, hub_dir: str | Path | None, predictor_path: str | Path):
        import torch

        hub = Path(hub_dir) if hub_dir else Path(torch.hub.get_dir())
        missing = [name for name in (FAN_WEIGHTS, S3FD_WEIGHTS)
                   if not (hub / "checkpoints" / name).is_file()]
        if missing:
            raise SvpError(f"{hub / 'checkpoints'}: face-alignment weights missing: "
                           f"{', '.join(missing)} (set features.face_alignment_hub)")
        import face_alignment

        torch.hub.set_dir(str(hub))
        self.model = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device="cpu", compile=False,
            face_detector_kwargs={"path_to_detector": str(hub / "checkpoints" / S3FD_WEIGHTS)})
        self.finder = DlibLandmarks(predictor_path)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 68, 2), np.nan, np.float32)
        previous = None
        for t, (frame, box) in enumerate(zip(frames, self.finder.boxes(frames), strict=True)):
            box = box or previous
            if box is None:
                continue
            found = self.model.get_landmarks_from_image(frame, detected_faces=[np.array(box)])
            if found:
                out[t] = found[0][:, :2]
            previous = box
        return out
