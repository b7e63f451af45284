"""An H.264 mp4 with the speech muxed in, fed frame by frame to ffmpeg (memory does not grow
with the video), written to a temp file beside the target and renamed only when complete."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from components.atomic import atomic_path
from components.errors import SvpError


def write_mp4(frames: Iterable[np.ndarray], out: str | Path, fps: float, audio: str | Path,
              crf: int = 18, audio_start_s: float | None = None,
              comment: str | None = None) -> int:
    """Encode `frames` (H, W, 3) uint8 with `audio`'s sound (from `audio_start_s` on, cut to the
    frames' length, if given); returns the number of frames. On any failure, `out` is untouched
    (a previous file there stays as it was). `comment` goes to the file's metadata."""
    out = Path(out)
    written = 0
    with atomic_path(out) as tmp:
        process = None
        try:
            for frame in frames:
                if process is None:
                    process = _start(tmp, frame.shape, fps, audio, crf, audio_start_s, comment)
                process.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
                written += 1
        except BaseException:
            if process is not None:
                process.kill()
                process.wait()
            raise
        if process is None:
            raise SvpError(f"{out}: no frames to write")
        process.stdin.close()
        error = process.stderr.read().decode(errors="replace")
        if process.wait() != 0:
            raise SvpError(f"{out}: ffmpeg failed: {' '.join(error.split())[:200]}")
    return written


def _start(path: Path, shape: tuple[int, ...], fps: float, audio: str | Path,
           crf: int, audio_start_s: float | None, comment: str | None) -> subprocess.Popen:
    h, w = shape[:2]
    cut = [] if audio_start_s is None else ["-ss", f"{audio_start_s:.3f}"]
    shortest = [] if audio_start_s is None else ["-shortest"]
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}",
               "-i", "-", *cut, "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", *shortest,
               *(["-metadata", f"comment={comment}"] if comment else []),
               "-f", "mp4", str(path)]
    try:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise SvpError("ffmpeg is not installed (apt-get install ffmpeg)") from None
