"""Finding samples in the dataset layouts SVP accepts.

- `mead`: `<id>/video/front/<emotion>/level_<n>/<clip>.mp4`, audio in
  `<id>/audio/<emotion>/level_<n>/<clip>.{wav,m4a}` (else the video's own track), and the
  generator's ground truth in `<id>/sidecar/...npz` when present. Positives for the style
  objective: same identity and emotion. An emotion folder outside MEAD's eight, a level folder
  that is not `level_<n>` or an audio file that is a dangling link is recorded as the sample's
  `layout_problem` (validation quarantines it).
- `hdtf`: video files directly in the folder; identity = clip name; positives = segments of the
  same video. Audio from the video.
- `folder`: any tree of videos; identity = the first folder level (a folder per person), or the
  clip name for videos at the top. Audio from the video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from components.config import MEAD_EMOTIONS
from components.errors import SvpError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
AUDIO_SUFFIXES = (".wav", ".m4a", ".flac", ".mp3")


@dataclass(frozen=True)
class Sample:
    sample_id: str
    layout: str
    identity: str
    emotion: str | None
    level: int | None
    clip: str
    style_group: str  # samples sharing it are positives for the style objective
    video_path: Path
    audio_path: Path  # a separate audio file, or the video itself
    sidecar_path: Path | None
    layout_problem: str | None = None  # why the sample's place in the layout is wrong

    @property
    def audio_source(self) -> str:
        return "video" if self.audio_path == self.video_path else "file"


def dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _videos(paths) -> list[Path]:
    """Video files (and dangling links named like one, so that they can be reported)."""
    return sorted(p for p in paths if (p.is_file() or dangling(p))
                  and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or "clip"


def discover_mead(root: Path) -> list[Sample]:
    samples = []
    for video in _videos(root.glob("*/video/front/*/*/*")):
        rel = video.relative_to(root)
        identity, emotion, level_dir = rel.parts[0], rel.parts[3], rel.parts[4]
        level = int(level_dir[6:]) if re.fullmatch(r"level_\d+", level_dir) else None
        base = root / identity / "audio" / emotion / level_dir / video.stem
        audio = next((base.with_suffix(s) for s in AUDIO_SUFFIXES
                      if base.with_suffix(s).is_file()), video)
        problems = []
        if emotion not in MEAD_EMOTIONS:
            problems.append(f"emotion folder '{emotion}' is not one of MEAD's eight "
                            f"({', '.join(MEAD_EMOTIONS)})")
        if level is None:
            problems.append(f"level folder '{level_dir}' is not level_<n>")
        problems += [f"audio file {base.with_suffix(s)} is a dangling symbolic link"
                     for s in AUDIO_SUFFIXES if dangling(base.with_suffix(s))]
        sidecar = (root / identity / "sidecar" / emotion / level_dir / video.stem).with_suffix(
            ".npz")
        samples.append(Sample(
            sample_id=_safe(f"{identity}_{emotion}_{level_dir}_{video.stem}"),
            layout="mead", identity=identity, emotion=emotion, level=level, clip=video.stem,
            style_group=f"{identity}/{emotion}", video_path=video, audio_path=audio,
            sidecar_path=sidecar if sidecar.is_file() else None,
            layout_problem="; ".join(problems) or None,
        ))
    return samples


def discover_hdtf(root: Path) -> list[Sample]:
    return [
        Sample(sample_id=_safe(v.stem), layout="hdtf", identity=v.stem, emotion=None, level=None,
               clip=v.stem, style_group=v.stem, video_path=v, audio_path=v, sidecar_path=None)
        for v in _videos(root.iterdir())
    ]


def discover_folder(root: Path) -> list[Sample]:
    samples = []
    for video in _videos(root.rglob("*")):
        rel = video.relative_to(root)
        identity = rel.parts[0] if len(rel.parts) > 1 else video.stem
        key = rel.with_suffix("").as_posix()
        samples.append(Sample(
            sample_id=_safe(key.replace("/", "__")), layout="folder", identity=identity,
            emotion=None, level=None, clip=video.stem, style_group=key, video_path=video,
            audio_path=video, sidecar_path=None,
        ))
    return samples


DISCOVERERS = {"mead": discover_mead, "hdtf": discover_hdtf, "folder": discover_folder}


def detect_layout(root: Path) -> str:
    if any(True for _ in root.glob("*/video/front/*/level_*/*")):
        return "mead"
    nested = any(p.is_dir() and _videos(p.rglob("*")) for p in root.iterdir())
    return "folder" if nested else "hdtf"


def discover(root: str | Path, layout: str = "auto") -> tuple[str, list[Sample]]:
    """All samples under `root`, with ids made unique; the layout actually used."""
    root = Path(root)
    if not root.is_dir():
        raise SvpError(f"{root}: dataset folder not found")
    layout = detect_layout(root) if layout == "auto" else layout
    samples = DISCOVERERS[layout](root)
    if not samples:
        raise SvpError(f"{root}: no video files found for layout '{layout}' "
                       f"(suffixes {sorted(VIDEO_SUFFIXES)})")
    seen: dict[str, int] = {}
    unique = []
    for sample in samples:
        count = seen.get(sample.sample_id, 0)
        seen[sample.sample_id] = count + 1
        if count:
            sample = Sample(**{**sample.__dict__, "sample_id": f"{sample.sample_id}-{count}"})
        unique.append(sample)
    return layout, unique
