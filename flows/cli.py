"""The `svp` command line. Data commands are the DVC stages' commands; `pipeline` runs the DAG."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from components.config import load_params
from components.disk import disk_full_from, is_disk_full
from components.errors import BAD_INPUT_EXIT_CODE, SERVICE_EXIT_CODE, SvpError
from components.runtime import apply_offline_defaults
from components.services import ServiceUnavailable, check_services, lost_service

app = typer.Typer(help="SVP: style-controllable talking-head generation and its pipeline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Dataset stages: synth, ingest, validate, features.",
                       no_args_is_help=True)
pipeline_app = typer.Typer(help="Run or schedule the whole DVC pipeline with Prefect.",
                           no_args_is_help=True)
train_app = typer.Typer(help="Training stages: style, vae, stage1, stage2, stage3.",
                        no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(pipeline_app, name="pipeline")
style_app = typer.Typer(help="Styles: extract a style reference video's prior to a file.",
                        no_args_is_help=True)
app.add_typer(style_app, name="style")

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file to read.")]


def needs(*services: str) -> Callable:
    """The services a command talks to (`components.services`): each one a variable names is
    checked before the command starts, and again if it crashes, to say which one was lost."""
    def wrap(command: Callable) -> Callable:
        @functools.wraps(command)
        def checked(*args, **kwargs):
            check_services(services)
            try:
                return command(*args, **kwargs)
            except SvpError:
                raise
            except Exception as err:
                if is_disk_full(err):
                    raise
                if (lost := lost_service(services)) is not None:
                    raise lost from err
                raise
        return checked
    return wrap


@data_app.command("synth")
@needs("mlflow")
def synth(params: ParamsOption = Path("params.yaml"),
          out: Annotated[Path | None, typer.Option(help="Override synth.out_dir.")] = None):
    """Generate the procedural MEAD-shaped talking-head dataset."""
    from components.synth.stage import synth_stage

    meta = synth_stage(load_params(params).synth, out)
    typer.echo(f"wrote {meta['n_clips']} clips of {len(meta['identities'])} identities")


@data_app.command("ingest")
@needs("mlflow")
def ingest(params: ParamsOption = Path("params.yaml"),
           source: Annotated[Path | None, typer.Option(help="Override ingest.source.")] = None,
           manifest: Annotated[Path | None, typer.Option(help="Override ingest.manifest.")] = None):
    """Discover samples (MEAD tree, HDTF folder, any folder) and write the Parquet manifest."""
    from components.ingest import ingest_stage

    table = ingest_stage(load_params(params).ingest, source, manifest)
    errors = sum(e is not None for e in table.column("probe_error").to_pylist())
    typer.echo(f"manifest: {table.num_rows} samples, {errors} with unreadable media")


@data_app.command("validate")
@needs("mlflow")
def validate(params: ParamsOption = Path("params.yaml"),
             manifest: Annotated[Path | None, typer.Option(help="Override the manifest.")] = None):
    """Check the manifest with Great Expectations; quarantine failing samples with a reason."""
    from components.validate import validate_stage

    cfg = load_params(params).validate
    metrics = validate_stage(cfg, manifest)
    typer.echo(f"validated: {metrics['n_passed']} passed, {metrics['n_quarantined']} "
               f"quarantined; report in {Path(cfg.report_dir) / 'report.html'}")


@data_app.command("features")
@needs("mlflow", "ray")
def features(params: ParamsOption = Path("params.yaml")):
    """Extract per-clip features (crops, landmarks, Head-Kps, expression, Whisper) to Parquet."""
    from components.features.stage import features_stage

    cfg = load_params(params).features
    metrics = features_stage(cfg)
    typer.echo(f"features: {metrics['n_passed']} clips ({metrics['n_frames']} frames), "
               f"{metrics['n_quarantined']} quarantined; in {cfg.out_dir}")


@train_app.command("style")
@needs("mlflow", "ray")
def train_style(params: ParamsOption = Path("params.yaml")):
    """Train the style extractor (Ray Train), evaluate it, register it in MLflow."""
    from components.style.stage import train_style as run_training

    result = run_training(load_params(params).train_style)
    strength = result["clustering_strength"]
    typer.echo(f"style extractor v{result['registered_version']}: clustering strength "
               f"exp {strength['exp']:.2f}, audio {strength['audio']:.2f}, both "
               f"{strength['both']:.2f} (random init both {result['random_init']['both']:.2f})")


@train_app.command("syncnet")
@needs("mlflow", "ray")
def train_syncnet(params: ParamsOption = Path("params.yaml")):
    """Train the SyncNet that scores lip sync (Sync-C / Sync-D), measure it, register it."""
    from components.syncnet.stage import train_syncnet as run_training

    result = run_training(load_params(params).train_syncnet)
    sync_c = result["sync_c"]
    typer.echo(f"syncnet v{result['registered_version']}: offset within 1 frame on "
               f"{result['offset_within_1']:.0%} of {result['windows']} held-out windows; "
               f"Sync-C own speech {sync_c['own_speech']['mean']:.2f}, other speech "
               f"{sync_c['other_speech']['mean']:.2f}")


@data_app.command("latents")
@needs("mlflow")
def latents(params: ParamsOption = Path("params.yaml")):
    """Cut every clip in the generator's crop and encode its frames with the VAE, once."""
    from components.diffusion.latents import build_latents

    loaded = load_params(params)
    result = build_latents(loaded.latents, loaded.diffusion)
    typer.echo(f"latents: {result['n_clips']} clips, {result['n_frames']} frames of "
               f"{result['latent_shape']} in {loaded.latents.out_dir}")


@train_app.command("vae")
@needs("mlflow", "ray")
def train_vae(params: ParamsOption = Path("params.yaml")):
    """Train the embedded VAE (or adopt diffusion.vae.pretrained), measure it, register it."""
    from components.diffusion.train.vae import train_vae as run_training

    loaded = load_params(params)
    result = run_training(loaded.train_vae, loaded.diffusion)
    typer.echo(f"vae v{result['registered_version']}: reconstruction PSNR "
               f"{result['reconstruction_psnr']:.2f} dB on held-out crops")


def _report_stage(result: dict) -> None:
    checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["learned"].items())
    typer.echo(f"{result['model_name']} v{result['registered_version']}: {checks}")


@train_app.command("stage1")
@needs("mlflow", "ray")
def train_stage1(params: ParamsOption = Path("params.yaml")):
    """Stage 1: single frames; UNet, ReferenceNet and Head-Kps guider train."""
    from components.diffusion.train.stage import train_denoiser

    loaded = load_params(params)
    _report_stage(train_denoiser(loaded.train_stage1, loaded.diffusion))


@train_app.command("stage2")
@needs("mlflow", "ray")
def train_stage2(params: ParamsOption = Path("params.yaml")):
    """Stage 2: 8-frame windows; motion modules and audio layers train, the rest frozen."""
    from components.diffusion.train.stage import train_denoiser

    loaded = load_params(params)
    _report_stage(train_denoiser(loaded.train_stage2, loaded.diffusion))


@train_app.command("stage3")
@needs("mlflow", "ray")
def train_stage3(params: ParamsOption = Path("params.yaml")):
    """Stage 3: cross-emotion references; only the style attention and projection train."""
    from components.diffusion.train.stage import train_denoiser

    loaded = load_params(params)
    _report_stage(train_denoiser(loaded.train_stage3, loaded.diffusion))


GeneratorOption = Annotated[str | None, typer.Option(
    "--model", help="A generator folder or registered svp-generator version (default: "
    "generate.model, the champion).")]


@app.command("assemble")
@needs("mlflow")
def assemble_command(
    denoiser: Annotated[str | None, typer.Option(help="Override generator.denoiser.")] = None,
    vae: Annotated[str | None, typer.Option(help="Override generator.vae.")] = None,
    style_model: Annotated[str | None, typer.Option(
        help="Override generator.style_model.")] = None,
    out: Annotated[Path | None, typer.Option(help="Override generator.out_dir.")] = None,
    params: ParamsOption = Path("params.yaml"),
):
    """Save the trained parts as one generator folder (a diffusers pipeline with its scheduler
    and diffusion.sampling's settings): what evaluate measures and promote registers."""
    from dataclasses import replace

    from components.generation.assemble import assemble

    loaded = load_params(params)
    g = loaded.generator
    cfg = replace(g, denoiser=denoiser or g.denoiser, vae=vae or g.vae,
                  style_model=style_model or g.style_model, out_dir=str(out or g.out_dir))
    pipeline = assemble(cfg, loaded.diffusion)
    typer.echo(f"wrote {cfg.out_dir}: samplers "
               f"{'; '.join(f'{q}: {pipeline.sampling(q).describe()}' for q in pipeline.qualities)}"
               f"; windows of {pipeline.config.window}")


@app.command("evaluate")
@needs("mlflow")
def evaluate(params: ParamsOption = Path("params.yaml")):
    """The paper's evaluation on the held-out identities: both protocols, every row, FID, FVD,
    PSNR, SSIM, F-LMD, M-LMD; metrics, report and videos under evaluate.out_dir."""
    from components.evaluation.stage import evaluate as run_evaluation

    loaded = load_params(params)
    metrics = run_evaluation(loaded.evaluate)
    for protocol in ("reconstruction", "style_transfer"):
        full = metrics[protocol]["full"]
        typer.echo(f"{protocol}: " + ", ".join(
            f"{k} {'-' if full[k] is None else f'{full[k]:.3f}'}"
            for k in ("fid", "fvd", "psnr", "ssim", "f_lmd", "m_lmd")))
    failed = [name for name, c in metrics["checks"].items() if not c["passed"]]
    typer.echo(f"checks: {len(metrics['checks']) - len(failed)}/{len(metrics['checks'])} passed"
               + (f" (not: {', '.join(failed)})" if failed else ""))


@app.command("generate")
def generate(
    image: Annotated[Path, typer.Option(help="The portrait (any size; the largest face).")],
    audio: Annotated[Path, typer.Option(help="The speech: anything ffmpeg reads.")],
    out: Annotated[Path, typer.Option(help="The mp4 to write (atomically).")],
    style_video: Annotated[list[Path] | None, typer.Option(
        help="A style reference video (give two to mix).")] = None,
    style: Annotated[list[Path] | None, typer.Option(
        help="A style file from `svp style extract` (give two to mix).")] = None,
    style_preset: Annotated[list[str] | None, typer.Option(
        help="One of the generator's style presets (an emotion of its training data; give two "
        "to mix).")] = None,
    style_mix: Annotated[float | None, typer.Option(
        help="With two styles: 0 is the first (videos, then files, then presets), 1 the "
        "second.")] = None,
    style_mean: Annotated[bool, typer.Option(
        help="The style prior's mean instead of a draw from it.")] = False,
    pose_video: Annotated[Path | None, typer.Option(
        help="Head motion from this video (else derived from the portrait).")] = None,
    seed: int = 0,
    steps: Annotated[int | None, typer.Option(
        help="Denoising steps (default: the generator's own; an override is logged and "
        "written to the mp4's metadata).")] = None,
    guidance: Annotated[float | None, typer.Option(
        help="Classifier-free guidance scale (default: the generator's own).")] = None,
    quality: Annotated[str | None, typer.Option(
        help="Sampler: fast (a few multistep-solver steps, guidance on the first few) or "
        "paper (the paper's 25 Euler steps, guidance on each; slower). Default: "
        "generate.quality.")] = None,
    model: GeneratorOption = None,
    params: ParamsOption = Path("params.yaml"),
):
    """A talking-head mp4 of the portrait saying the speech, in the style (by default with the
    registry's champion generator)."""
    from components.generation.assemble import load_generator
    from components.generation.generate import Request
    from components.generation.generate import generate as generate_video

    loaded = load_params(params)
    request = Request(str(image), str(audio), str(out),
                      tuple(map(str, style_video or ())), tuple(map(str, style or ())),
                      tuple(style_preset or ()), style_mix, style_mean,
                      pose_video and str(pose_video), seed, steps, guidance, quality)
    request.check()  # before any model is loaded
    source = model or loaded.generate.model
    if source.startswith("models:/"):
        check_services(("mlflow",))
    made = generate_video(load_generator(source), request,
                          loaded.generate)
    typer.echo(f"wrote {made['out']}: {made['frames']} frames, {made['seconds']:.2f} s "
               f"({made['sampling']})")


@app.command("promote")
@needs("mlflow")
def promote_command(
    dry_run: Annotated[bool, typer.Option(
        help="Print the decision; register nothing, move no alias, write no file.")] = False,
    params: ParamsOption = Path("params.yaml"),
):
    """Register the evaluated generator as svp-generator's `challenger`; make it `champion` if
    it beats the current one by promote's rule."""
    from components.promotion.stage import promote

    record = promote(load_params(params), dry_run=dry_run)
    verdict = ("would become champion" if record["promoted"] else "would not become champion") \
        if dry_run else "champion" if record["promoted"] else "challenger, not champion"
    version = record["challenger_version"]
    typer.echo(f"{'dry run: ' if dry_run else f'svp-generator v{version}: '}{verdict}: "
               f"{record['reason']}")
    for key, c in record["compared"].items():
        typer.echo(f"  {key}: {c['challenger']:.4g}" + (
            f" vs champion {c['champion']:.4g} ({c['relative_gain']:+.1%})" if "champion" in c
            else ""))


@app.command("register-generator")
@needs("mlflow")
def register_generator_command(
    folder: Annotated[Path | None, typer.Argument(
        help="A generator folder (default: generator.out_dir).")] = None,
    params: ParamsOption = Path("params.yaml"),
):
    """Register a generator folder as a version of svp-generator, for `mlflow models serve`."""
    from components.registry.generator import register_generator

    version = register_generator(folder or load_params(params).generator.out_dir)
    typer.echo(f"svp-generator v{version}; serve it with: mlflow models serve -m "
               f"models:/svp-generator/{version} --env-manager local -p 5001")


@app.command("demo")
def demo_command(
    model: GeneratorOption = None,
    host: Annotated[str | None, typer.Option(help="Override demo.host (0.0.0.0: other "
                                             "machines).")] = None,
    port: Annotated[int | None, typer.Option(help="Override demo.port.")] = None,
    params: ParamsOption = Path("params.yaml"),
):
    """A web page to make talking-head videos with a generator (the champion by default)."""
    from components.demo.app import Demo, launch
    from components.generation.assemble import load_generator

    loaded = load_params(params)
    if port is not None and not 1 <= port <= 65535:
        raise SvpError(f"--port must lie in [1, 65535], got {port}")
    source = model or loaded.generate.model
    if source.startswith("models:/"):
        check_services(("mlflow",))
    cfg = loaded.demo
    demo = Demo(load_generator(source), source, cfg, loaded.generate)
    typer.echo(f"svp demo on {source}: http://{host or cfg.host}:{port or cfg.port}")
    launch(demo, host or cfg.host, port or cfg.port)


@style_app.command("extract")
def style_extract(
    video: Annotated[Path, typer.Argument(help="The style reference video.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The style file to write.")],
    model: GeneratorOption = None, params: ParamsOption = Path("params.yaml"),
):
    """The intrinsic style prior (mean and variance) of a video, to a file for --style."""
    from components.generation.extract_style import extract_style

    source = model or load_params(params).generate.model
    if source.startswith("models:/"):
        check_services(("mlflow",))
    style = extract_style(source, str(video), str(out))
    typer.echo(f"wrote {out}: a {len(style.mean)}-wide style prior of {video.name}")


@pipeline_app.command("stages")
def stages():
    """List dvc.yaml's stages in the order the pipeline runs them."""
    from components.dvc_pipeline import stage_order

    typer.echo("\n".join(stage_order(".")))


@pipeline_app.command("run")
@needs("prefect", "mlflow", "ray")
def run(stage: Annotated[list[str] | None, typer.Option(help="Run only these stages.")] = None,
        force: Annotated[bool, typer.Option(help="Rerun stages even if unchanged.")] = False):
    """Run dvc.yaml's stages in DVC's order as a Prefect flow (one task per stage)."""
    from flows.pipeline import svp_pipeline

    state = svp_pipeline(root=str(Path.cwd()), only=stage or None, force=force,
                         return_state=True)
    if state.is_failed():
        raise SvpError(state.message)
    ran = state.result()
    typer.echo(f"pipeline done; stages run: {', '.join(ran) or 'none (all up to date)'}")


@pipeline_app.command("serve")
@needs("prefect")
def serve(cron: Annotated[str, typer.Option(help="Cron schedule, e.g. '0 3 * * *'.")],
          name: Annotated[str, typer.Option(help="Deployment name.")] = "svp-scheduled"):
    """Serve a deployment of the pipeline flow that runs on a cron schedule (blocks)."""
    from prefect import serve as serve_deployments

    from flows.pipeline import make_deployment

    serve_deployments(make_deployment(Path.cwd(), cron, name))


def main() -> None:
    apply_offline_defaults()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("components")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    try:
        app()
    except ServiceUnavailable as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(SERVICE_EXIT_CODE)
    except SvpError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(BAD_INPUT_EXIT_CODE)
    except Exception as err:
        if not is_disk_full(err):
            raise
        typer.echo(f"error: {disk_full_from(err)}", err=True)
        sys.exit(BAD_INPUT_EXIT_CODE)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
