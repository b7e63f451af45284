"""What `svp generate` reads, made into what the generator was trained on: the portrait's face
crop, the speech's Whisper features, a video's landmarks. Processing follows the features and
latents stages (the same detector, crop rule, Whisper states and frame rate); every bad input is
one `SvpError` line naming the file and the problem."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from components.errors import SvpError
from components.features import audio as whisper_features
from components.features.crop import crop_frame, fill_gaps, smooth_boxes, to_crop
from components.features.extract import resample_frames
from components.features.landmarks import DlibLandmarks
from components.media import decode_audio, decode_video, speech_dbfs

log = logging.getLogger(__name__)

DETECTOR_SIDE = 256  # smaller images are upscaled before detection (dlib's HOG wants ~80 px faces)


@dataclass(frozen=True)
class Portrait:
    crop: np.ndarray  # (R, R, 3) uint8, the generator's framing
    landmarks: np.ndarray  # (68, 2) in crop pixels
    box: np.ndarray  # (x0, y0, side) of the crop in the image's pixels


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # 16 kHz mono float32
    features: np.ndarray  # (T, N_HIDDEN, 2, 384) float16 per video frame, as the features stage
    # stores them

    @property
    def n_frames(self) -> int:
        return len(self.features)


def _exists(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise SvpError(f"{path}: {what} not found")
    return path


def _upscale(frames: np.ndarray) -> tuple[np.ndarray, int]:
    scale = max(1, math.ceil(DETECTOR_SIDE / min(frames.shape[1:3])))
    if scale == 1:
        return frames, 1
    return np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                     for f in frames]), scale


def face_landmarks(frames: np.ndarray, detector: DlibLandmarks) -> tuple[np.ndarray, int]:
    """(T, 68, 2) landmarks of the largest face per frame (NaN where none), and the most faces
    seen in one frame."""
    big, scale = _upscale(frames)
    most = max(len(detector.detector(f, 1)) for f in big[: min(len(big), 8)])
    return detector(big) / scale, most


def read_portrait(path: str | Path, detector: DlibLandmarks, crop_scale: float,
                  resolution: int) -> Portrait:
    path = _exists(path, "image")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SvpError(f"{path}: not an image OpenCV can read")
    if min(image.shape[:2]) < resolution:
        raise SvpError(f"{path}: the image is {image.shape[1]}x{image.shape[0]} pixels, smaller "
                       f"than the generator's {resolution}x{resolution} face crop")
    image = np.ascontiguousarray(image[..., ::-1])
    landmarks, faces = face_landmarks(image[None], detector)
    if faces == 0 or np.isnan(landmarks).any():
        raise SvpError(f"{path}: no face found in the image")
    if faces > 1:
        log.info("%s: %d faces found; using the largest", path, faces)
    box = smooth_boxes(landmarks, crop_scale, 1)[0]
    return Portrait(crop_frame(image, box, resolution), to_crop(landmarks[0], box, resolution),
                    box)


def read_speech(path: str | Path, fps: float, whisper_checkpoint: str | None,
                min_dbfs: float, max_seconds: float) -> Speech:
    """Any audio ffmpeg reads (or a video's sound track), as 16 kHz mono and its features."""
    path = _exists(path, "audio")
    try:
        samples, _ = decode_audio(path, whisper_features.SAMPLE_RATE)
    except Exception as err:  # a decoder failure is this file's problem
        raise SvpError(f"{path}: cannot decode audio ({' '.join(str(err).split())[:120]})"
                       ) from None
    seconds = len(samples) / whisper_features.SAMPLE_RATE
    if not np.isfinite(samples).all():
        raise SvpError(f"{path}: the audio has {np.count_nonzero(~np.isfinite(samples))} NaN or "
                       "infinite samples")
    if len(samples) < whisper_features.SAMPLE_RATE // fps:
        raise SvpError(f"{path}: the audio is empty ({seconds:.2f} s)")
    if seconds > max_seconds:
        raise SvpError(f"{path}: {seconds:.1f} s of audio is over the maximum of {max_seconds:g} s "
                       "(generate.max_audio_s)")
    if speech_dbfs(samples, whisper_features.SAMPLE_RATE) < min_dbfs:
        raise SvpError(f"{path}: the audio is silent (below {min_dbfs:g} dBFS)")
    n_frames = max(1, round(seconds * fps))
    states = whisper_features.encode_clip(samples, whisper_checkpoint)
    frames = whisper_features.per_frame(states, n_frames, fps).astype(np.float16)
    return Speech(samples, frames)


def read_video_landmarks(path: str | Path, detector: DlibLandmarks, fps: float,
                         what: str) -> tuple[np.ndarray, tuple[int, int]]:
    """A video's landmarks at `fps` (T, 68, 2), gaps filled, and its frame size (h, w)."""
    path = _exists(path, what)
    try:
        frames, source_fps = decode_video(path)
    except Exception as err:
        raise SvpError(f"{path}: cannot decode the {what} ({' '.join(str(err).split())[:120]})"
                       ) from None
    frames = frames[resample_frames(len(frames), source_fps, fps)]
    landmarks, _ = face_landmarks(frames, detector)
    found = ~np.isnan(landmarks).any(axis=(1, 2))
    if not found.any():
        raise SvpError(f"{path}: no face found in the {what}")
    filled = fill_gaps(landmarks.reshape(len(landmarks), -1)).reshape(landmarks.shape)
    return filled.astype(np.float32), frames.shape[1:3]
