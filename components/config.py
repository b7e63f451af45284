"""Typed configuration built from `params.yaml`.

Every section is a frozen pydantic dataclass with `extra="forbid"`, so a misspelt key or a value
of the wrong type is an error naming the key, never a silently ignored default. Each stage reads
only its own section.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from components.errors import SvpError

STRICT = ConfigDict(extra="forbid", frozen=True)

MEAD_EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")


@dataclass(config=STRICT)
class SynthConfig:
    """The procedural talking-head dataset (`svp data synth`)."""

    out_dir: str = "data/synth"
    seed: int = 0
    n_identities: int = Field(8, ge=1, le=999)
    emotions: list[str] = field(default_factory=lambda: list(MEAD_EMOTIONS))
    levels: list[int] = field(default_factory=lambda: [1, 3])
    n_sentences: int = Field(2, ge=1)
    resolution: int = Field(128, ge=32, le=2048)
    fps: int = Field(25, ge=1, le=120)
    sample_rate: int = Field(16000, ge=8000)
    workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        unknown = sorted(set(self.emotions) - set(MEAD_EMOTIONS))
        if unknown:
            raise ValueError(f"unknown emotions {unknown}; MEAD's are {list(MEAD_EMOTIONS)}")
        if any(level not in (1, 2, 3) for level in self.levels):
            raise ValueError(f"levels must be among 1, 2, 3 (MEAD's intensities): {self.levels}")
        if self.resolution % 2:
            raise ValueError(f"resolution must be even for H.264 yuv420p, got {self.resolution}")
        return self


@dataclass(config=STRICT)
class SplitConfig:
    """Identity-disjoint train/test split."""

    test_identities: list[str] = field(default_factory=list)
    n_test_identities: int = Field(2, ge=0)
    seed: int = 0


@dataclass(config=STRICT)
class IngestConfig:
    """Sample discovery and the Parquet manifest (`svp data ingest`)."""

    source: str = "data/synth"
    layout: Literal["auto", "mead", "hdtf", "folder"] = "auto"
    manifest: str = "data/manifest/manifest.parquet"
    probe_cache: str = ".svp/cache/ingest-probes.jsonl"
    split: SplitConfig = field(default_factory=SplitConfig)
    workers: int = Field(2, ge=1)


@dataclass(config=STRICT)
class ValidateConfig:
    """Data-quality gate over the manifest (`svp data validate`)."""

    manifest: str = "data/manifest/manifest.parquet"
    out_dir: str = "data/validated"
    report_dir: str = "reports/validate"
    min_fps: float = Field(20.0, gt=0)
    max_fps: float = Field(60.0, gt=0)
    min_frames: int = Field(8, ge=1)
    max_duration_s: float = Field(120.0, gt=0)
    min_side: int = Field(64, ge=1)
    min_sample_rate: int = Field(16000, ge=1)
    max_audio_channels: int = Field(1, ge=1)
    min_audio_dbfs: float = -45.0
    max_av_mismatch_s: float = Field(0.25, ge=0)
    max_failing_share: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> ValidateConfig:
        if self.min_fps > self.max_fps:
            raise ValueError(f"min_fps {self.min_fps} exceeds max_fps {self.max_fps}")
        return self


@dataclass(config=STRICT)
class FeaturesConfig:
    """Per-clip features in Parquet (`svp data features`)."""

    manifest: str = "data/validated/manifest.parquet"
    out_dir: str = "data/features"
    report_dir: str = "reports/features"
    fps: float = Field(25.0, gt=0)
    crop_size: int = Field(64, ge=16, le=2048)
    crop_scale: float = Field(1.6, gt=1)
    box_smoothing: int = Field(7, ge=1)
    jpeg_quality: int = Field(95, ge=10, le=100)
    landmarks: Literal["auto", "sidecar", "dlib", "face_alignment"] = "auto"
    dlib_predictor: str = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
    face_alignment_hub: str | None = None
    max_missing_face_share: float = Field(0.2, ge=0, le=1)
    min_audio_dbfs: float = -45.0
    expression: Literal["basis", "3dmm"] = "basis"
    expression_dir: str | None = None
    n_expression: int = Field(16, ge=1, le=132)
    whisper_checkpoint: str | None = None
    workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> FeaturesConfig:
        if self.expression == "3dmm" and not self.expression_dir:
            raise ValueError("expression: 3dmm needs expression_dir (Deep3DFaceRecon files)")
        return self


@dataclass(config=STRICT)
class TrainStyleConfig:
    """The style extractor and its contrastive training (`svp train style`)."""

    features_dir: str = "data/features"
    out_dir: str = "data/style"
    checkpoint_dir: str = "data/style_checkpoints"
    report_dir: str = "reports/style"
    d_model: int = Field(64, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    window: int = Field(64, ge=8)  # frames per training sample
    max_frames: int = Field(256, ge=8)  # longest sequence the model takes (evaluation)
    steps: int = Field(200, ge=1)
    lr: float = Field(1e-3, gt=0)
    groups_per_batch: int = Field(8, ge=2)
    windows_per_group: int = Field(4, ge=2)
    temperature: float = Field(0.1, gt=0)
    similarity_constant: float = Field(1.0, gt=0)
    modality_dropout: float = Field(0.15, ge=0, le=0.5)
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 0
    workers: int = Field(0, ge=0)  # 0: Ray Train local mode in this process; N: N Ray workers
    use_gpu: bool = False
    model_name: str = "svp-style-extractor"

    @model_validator(mode="after")
    def _check(self) -> TrainStyleConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.window > self.max_frames:
            raise ValueError(f"window {self.window} exceeds max_frames {self.max_frames}")
        return self


@dataclass(config=STRICT)
class PipelineConfig:
    """The Prefect flow over `dvc.yaml`'s stages."""

    retries: int = Field(1, ge=0)
    retry_delay_s: float = Field(10.0, ge=0)


@dataclass(config=STRICT)
class Params:
    """All of `params.yaml`."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train_style: TrainStyleConfig = field(default_factory=TrainStyleConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check `params.yaml`; any problem is one `SvpError` line naming the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SvpError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise SvpError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SvpError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "<top level>"
        message = "unknown key" if first["type"] == "unexpected_keyword_argument" else first["msg"]
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise SvpError(f"{path}: {key}: {message}{more}") from None
    except TypeError as err:
        raise SvpError(f"{path}: {err}") from None
