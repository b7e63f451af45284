"""`svp data synth`: a seeded, MEAD-shaped dataset of procedural talking heads.

Layout under `out_dir` (the same as MEAD's, plus a ground-truth sidecar per clip):

    <ID>/video/front/<emotion>/level_<n>/<clip>.mp4    H.264 + AAC speech, `fps`, square
    <ID>/audio/<emotion>/level_<n>/<clip>.wav          16-bit mono PCM at `sample_rate`
    <ID>/sidecar/<emotion>/level_<n>/<clip>.npz        per-frame truth (see `write_sidecar`)
    dataset.json                                       the config and the clip count

Each clip is a pure function of (seed, identity, emotion, level, sentence), so a rerun writes the
same bytes and an interrupted run resumes at the first missing clip. The bytes do not depend on
the CPU either (see `components/synth/exact.py`): the float tracks and landmarks sit on fixed
grids (`*_BITS`), OpenCV draws with its baseline code and ffmpeg/x264 encode CPU-independently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.config import MEAD_EMOTIONS, SynthConfig
from components.errors import SvpError
from components.progress import pool_map
from components.synth import face_model as fm
from components.synth.exact import snap
from components.synth.render import (
    Look,
    background,
    cpu_independent_opencv,
    head_outline_points,
    random_look,
    render_frame,
)
from components.synth.speech import SENTENCES, Voice, frame_features, random_voice, speak, write_wav

log = logging.getLogger(__name__)

FACE_UNIT = 0.5  # face width as a share of the frame
BODY = np.array([[-0.35, 0.8], [0.35, 0.8], [1.0, 1.15], [1.2, 1.6], [-1.2, 1.6], [-1.0, 1.15]])
# Fixed grids (multiples of 2**-bits) for every float that is stored or drawn: a last-bit
# difference cannot move a value off its grid point, and float32 holds them exactly.
EXPRESSION_BITS = 16  # controls, about 1.5e-5
POSE_BITS = 12  # degrees, about 2.4e-4
PIXEL_BITS = 5  # 1/32 pixel: the drawing's own precision (4 fractional bits at 2x supersampling)


@dataclass(frozen=True)
class Identity:
    name: str
    index: int
    female: bool
    shape: np.ndarray
    look: Look
    voice: Voice
    habits: fm.SpeakingHabits
    offset: tuple[float, float]  # where the head sits in the frame, as a share of its size


def make_identity(seed: int, index: int) -> Identity:
    rng = np.random.default_rng([seed, 7919, index])
    female = bool(rng.integers(2))
    return Identity(
        name=f"{'W' if female else 'M'}{index + 1:03d}",
        index=index,
        female=female,
        shape=fm.identity_shape(rng),
        look=random_look(rng),
        voice=random_voice(rng, female),
        habits=fm.speaking_habits(rng),
        offset=(rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03)),
    )


@dataclass(frozen=True)
class ClipSpec:
    identity: int
    emotion: str
    level: int
    sentence: int

    def relpaths(self, identity_name: str) -> dict[str, Path]:
        leaf = Path(self.emotion) / f"level_{self.level}" / f"{self.sentence + 1:03d}"
        root = Path(identity_name)
        return {
            "video": root / "video" / "front" / leaf.with_suffix(".mp4"),
            "audio": root / "audio" / leaf.with_suffix(".wav"),
            "sidecar": root / "sidecar" / leaf.with_suffix(".npz"),
        }


def plan_clips(cfg: SynthConfig) -> list[ClipSpec]:
    """Every clip of the dataset. Neutral has one level only, as in MEAD."""
    return [
        ClipSpec(i, emotion, level, s)
        for i in range(cfg.n_identities)
        for emotion in cfg.emotions
        for level in ([1] if emotion == "neutral" else cfg.levels)
        for s in range(cfg.n_sentences)
    ]


def sentence_text(identity: int, sentence: int) -> str:
    """Each identity reads its own few sentences, the same ones in every emotion (as in MEAD)."""
    return SENTENCES[(identity * 3 + sentence) % len(SENTENCES)]


def animate(identity: Identity, spec: ClipSpec, cfg: SynthConfig):
    """Speech, per-frame expression, head pose and projected landmarks of one clip."""
    rng = np.random.default_rng(
        [cfg.seed, spec.identity, MEAD_EMOTIONS.index(spec.emotion), spec.level, spec.sentence])
    style = fm.emotion_at_level(spec.emotion, spec.level)
    text = sentence_text(spec.identity, spec.sentence)
    audio = speak(text, identity.voice, style.rate, style.pitch, style.pitch_range, style.volume,
                  cfg.sample_rate)
    n_frames = max(1, round(len(audio) / cfg.sample_rate * cfg.fps))
    energy, tilt = frame_features(audio, cfg.sample_rate, cfg.fps, n_frames)
    expression = fm.expression_track(style, identity.habits, energy, tilt, cfg.fps, rng)
    pose = fm.head_pose_track(style, identity.habits, energy, cfg.fps, rng)
    return text, audio, snap(expression, EXPRESSION_BITS), snap(pose, POSE_BITS)


def project(points: np.ndarray, pose: np.ndarray, identity: Identity, size: int) -> np.ndarray:
    """Posed face-unit points (N, 3) to pixel coordinates (N, 2), on the 2**-PIXEL_BITS grid."""
    unit = FACE_UNIT * size
    centre = np.array([0.5 + identity.offset[0], 0.47 + identity.offset[1]]) * size
    centre = centre + [0.002 * pose[0] * size, 0.0]  # the head sways a little with its turn
    return snap(centre + unit * fm.pose_points(points, pose)[:, :2], PIXEL_BITS)


def render_clip(identity: Identity, expression: np.ndarray, pose: np.ndarray, size: int):
    """Frames (T, size, size, 3) uint8 and their 68 landmarks (T, 68, 2) in pixels."""
    outline = head_outline_points(identity.look)
    backdrop = background(identity.look, size)
    unit = FACE_UNIT * size
    centre = np.array([0.5 + identity.offset[0], 0.47 + identity.offset[1]]) * size
    body = snap(centre + unit * BODY, PIXEL_BITS)
    frames = np.empty((len(pose), size, size, 3), np.uint8)
    landmarks = np.empty((len(pose), 68, 2), np.float32)
    ends = np.cumsum([68] + [len(v) for v in outline.values()])
    with cpu_independent_opencv():
        for t in range(len(pose)):  # one projection per frame for the face and its outline
            points = np.vstack([fm.deform(identity.shape, expression[t]), *outline.values()])
            lm, *parts = np.split(project(points, pose[t], identity, size), ends[:-1])
            posed = dict(zip(outline, parts, strict=True))
            frames[t] = render_frame(lm, posed, body, identity.look, backdrop, unit)
            landmarks[t] = lm
    return frames, landmarks


def encode_mp4(frames: np.ndarray, wav: Path, out: Path, fps: int) -> None:
    """H.264 (yuv420p) with the wav muxed in as AAC; bit-exact flags keep reruns identical.

    The bytes do not depend on the CPU: `-cpuflags 0` keeps ffmpeg's own libraries on their C code
    (swscale's SIMD RGB->YUV conversion rounds differently from it), and x264's `cpu-independent`
    makes it pick the same algorithms on every CPU (its default output changes with the CPU's
    instruction sets, measured by switching its assembly off)."""
    size = frames.shape[1]
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y", "-cpuflags", "0",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(fps),
        "-i", "pipe:0", "-i", str(wav), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-x264-params", "cpu-independent=1", "-sws_flags", "bicubic+accurate_rnd+bitexact",
        "-threads", "1", "-c:a", "aac", "-b:a", "64k",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out),
    ]
    try:
        run = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False)
    except FileNotFoundError:
        raise SvpError("ffmpeg is not installed (apt-get install ffmpeg)") from None
    if run.returncode != 0:
        raise SvpError(f"{out}: ffmpeg failed: {run.stderr.decode(errors='replace').strip()[:300]}")


def write_sidecar(path: Path, **arrays) -> None:
    """Ground truth as a plain npz (no pickles): landmarks (T,68,2) px in iBUG order, pose (T,3)
    yaw/pitch/roll degrees, expression (T,K) over `expression_names`, and the labels. The floats
    are float32 on the grids above (1/32 px, 2**-12 degree, 2**-16), so float32 holds them
    exactly and the landmarks are exactly where the face was drawn."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def make_clip(spec: ClipSpec, cfg: SynthConfig, root: Path) -> Path:
    """Render one clip into `root` atomically: temp files first, the video renamed last."""
    identity = make_identity(cfg.seed, spec.identity)
    paths = {k: root / v for k, v in spec.relpaths(identity.name).items()}
    if all(p.exists() for p in paths.values()):
        return paths["video"]
    text, audio, expression, pose = animate(identity, spec, cfg)
    frames, landmarks = render_clip(identity, expression, pose, cfg.resolution)
    tmp = {k: p.with_name(f".{p.name}.tmp{os.getpid()}") for k, p in paths.items()}
    for p in tmp.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    write_wav(tmp["audio"], audio, cfg.sample_rate)
    encode_mp4(frames, tmp["audio"], tmp["video"], cfg.fps)
    write_sidecar(
        tmp["sidecar"],
        landmarks=landmarks, pose=pose.astype(np.float32),
        expression=expression.astype(np.float32), expression_names=np.array(fm.CONTROLS),
        identity=np.array(identity.name), emotion=np.array(spec.emotion),
        level=np.array(spec.level), sentence=np.array(spec.sentence), text=np.array(text),
        fps=np.array(cfg.fps), sample_rate=np.array(cfg.sample_rate),
    )
    for key in ("sidecar", "audio", "video"):
        os.replace(tmp[key], paths[key])
    return paths["video"]


def synthesize_dataset(cfg: SynthConfig, out_dir: str | Path | None = None) -> dict:
    """Write the whole dataset; clips already complete are kept, so a rerun resumes."""
    root = Path(out_dir or cfg.out_dir)
    if shutil.which("ffmpeg") is None:
        raise SvpError("ffmpeg is not installed (apt-get install ffmpeg)")
    meta_path = root / "dataset.json"
    config = asdict(cfg) | {"out_dir": None}
    if meta_path.exists() and json.loads(meta_path.read_text()).get("config") != config:
        log.info("params changed since %s was written; regenerating it", root)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_json(meta_path, {"config": config, "complete": False})
    for stale in root.rglob(".*.tmp*"):
        stale.unlink()
    clips = plan_clips(cfg)
    for _ in pool_map(make_clip, clips, cfg, root, workers=cfg.workers, desc="synth",
                      unit="clips"):
        pass
    meta = {"config": config, "complete": True, "n_clips": len(clips),
            "identities": [make_identity(cfg.seed, i).name for i in range(cfg.n_identities)]}
    _write_json(meta_path, meta)
    return meta


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
