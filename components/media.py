"""Reading what a media file really holds, with PyAV (FFmpeg's libraries, in process).

Probes never raise on bad media: they return a `problem` string instead, so that one broken file
becomes a quarantined sample with a reason rather than a failed run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

LOUDNESS_WINDOW_S = 0.05
SILENCE_DBFS = -120.0


@dataclass(frozen=True)
class VideoInfo:
    fps: float | None = None
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    has_audio: bool | None = None
    problem: str | None = None

    @property
    def duration_s(self) -> float | None:
        return self.n_frames / self.fps if self.n_frames is not None and self.fps else None


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int | None = None
    channels: int | None = None
    duration_s: float | None = None
    dbfs: float | None = None  # loudness of the speech: 95th percentile of 50 ms windows
    problem: str | None = None


def _error_text(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())[:200]


def probe_video(path: Path) -> VideoInfo:
    """Stream facts, counting the packets actually readable (a truncated file has fewer than its
    header promises) and decoding up to the first frame."""
    if path.stat().st_size == 0:
        return VideoInfo(problem="empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return VideoInfo(problem="no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            promised = stream.frames
            n_packets, decoded = 0, False
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                n_packets += 1
                if not decoded:
                    decoded = bool(packet.decode())
            info = VideoInfo(
                fps=float(rate) if rate else None,
                n_frames=n_packets,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                codec=stream.codec_context.name,
                has_audio=bool(container.streams.audio),
            )
    except (av.FFmpegError, OSError, ValueError) as err:
        return VideoInfo(problem=f"unreadable video: {_error_text(err)}")
    if not decoded and n_packets:
        return VideoInfo(problem="no frame could be decoded")
    if n_packets == 0:
        return VideoInfo(problem="video stream holds no frames")
    if promised and n_packets < promised:
        return VideoInfo(problem=f"truncated: {n_packets} of {promised} frames readable")
    if not info.fps:
        return VideoInfo(problem="video stream has no frame rate")
    return info


def probe_audio(path: Path) -> AudioInfo:
    """Decode the first audio stream of `path` (a wav, m4a or a video) and measure loudness."""
    if path.stat().st_size == 0:
        return AudioInfo(problem="empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return AudioInfo(problem="no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            channels = stream.codec_context.channels
        samples, rate = decode_audio(path)
    except (av.FFmpegError, OSError, ValueError) as err:
        return AudioInfo(problem=f"unreadable audio: {_error_text(err)}")
    if samples.size == 0:
        return AudioInfo(sample_rate=rate, channels=channels, problem="audio stream is empty")
    return AudioInfo(sample_rate=rate, channels=channels, duration_s=samples.size / rate,
                     dbfs=speech_dbfs(samples, rate))


def decode_audio(path: Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream as float32 mono samples, resampled to `rate` if given."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = rate or stream.codec_context.sample_rate
        mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray().reshape(-1) for f in mono.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in mono.resample(None))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


def decode_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames as uint8 RGB (T, H, W, 3), and the frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not frames:
        raise ValueError("no decodable frame")
    return np.stack(frames), fps


def speech_dbfs(samples: np.ndarray, rate: int) -> float:
    """Loudness of the loud part of a clip, so pauses do not count as quiet speech."""
    window = max(1, int(LOUDNESS_WINDOW_S * rate))
    usable = samples[: len(samples) // window * window] if len(samples) >= window else samples
    rms = np.sqrt(np.mean(usable.reshape(-1, min(window, len(usable))) ** 2, axis=1))
    loud = float(np.percentile(rms, 95))
    return round(20 * np.log10(loud), 2) if loud > 0 else SILENCE_DBFS


def content_hash(*paths: Path) -> str:
    """sha256 over the bytes of the given files, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def folder_hash(folder: str | Path) -> str:
    """sha256 over a folder's files: each one's path relative to the folder, then its bytes."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(content_hash(path).encode())
    return digest.hexdigest()
