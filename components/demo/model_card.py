"""The demo's model panel: which generator answers, what it was trained on, how it was
evaluated and whether it was promoted, from the registry's tags (a registered version) or the
evaluation report that measured these very bytes (a folder)."""

from __future__ import annotations

import json
from pathlib import Path

from components.generation.pipeline import TalkingHeadPipeline
from components.media import folder_hash
from components.runtime import mlflow_tracking_uri

SHOWN = ("fid", "fvd", "psnr", "ssim", "f_lmd", "m_lmd")


def _table(evaluation: dict) -> list[str]:
    lines = ["| protocol | " + " | ".join(m.upper().replace("_", "-") for m in SHOWN) + " |",
             "|---" * (len(SHOWN) + 1) + "|"]
    for protocol in ("reconstruction", "style_transfer"):
        full = evaluation.get(protocol, {}).get("full", {})
        cells = ["–" if full.get(m) is None else f"{full[m]:.3g}" for m in SHOWN]
        lines.append(f"| {protocol.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return lines


def _registered(uri: str) -> tuple[list[str], dict | None]:
    """Lines about a `models:/name@alias` or `models:/name/version`, and its evaluation."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_tracking_uri())
    name, _, ref = uri.removeprefix("models:/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        version = client.get_model_version(name, ref)
    tags = version.tags
    aliases = ", ".join(version.aliases) or "none"
    lines = [f"**{name} version {version.version}** (aliases: {aliases})"]
    if "svp.decision" in tags:
        lines.append(f"Promotion: {tags['svp.decision']}: {tags.get('svp.decision.reason', '')}")
    evaluation = json.loads(tags["svp.evaluation"]) if "svp.evaluation" in tags else None
    return lines, evaluation


def _folder(folder: Path, metrics: Path) -> tuple[list[str], dict | None]:
    lines = [f"**Generator folder** `{folder}` (not a registered version)"]
    if metrics.is_file():
        measured = json.loads(metrics.read_text())
        if measured.get("generator", {}).get("digest") == folder_hash(folder):
            return lines + [f"Evaluated in `{metrics.parent}`"], measured
    return lines + ["Not evaluated in its current form (run `svp evaluate`)."], None


def model_card(source: str, pipeline: TalkingHeadPipeline, report: Path, quality: str) -> str:
    """Markdown for the model panel; `report` is the evaluation's HTML report, `quality` the
    sampler the page runs."""
    try:
        if source.startswith("models:/"):
            lines, evaluation = _registered(source)
        else:
            lines, evaluation = _folder(Path(source), report.parent / "metrics.json")
    except Exception as err:  # the panel never stops the page from serving
        lines, evaluation = [f"**{source}** (registry details unavailable: "
                             f"{' '.join(str(err).split())[:120]})"], None
    c = pipeline.config
    lines += [f"Trained on {pipeline.input_settings.config.training_data}.",
              f"Samples with its {quality} sampler ({pipeline.sampling(quality).describe()}), "
              f"windows of "
              f"{c.window} frames at {c.resolution}x{c.resolution}."]
    lines += [f"- {name}: `{part['source']}` (weights {part['weights']})"
              for name, part in c.parts.items()]
    if evaluation is not None:
        lines += ["Evaluation (full model, held-out identities):", *_table(evaluation)]
    return "\n".join(_paragraphs(lines))


def _paragraphs(lines: list[str]) -> list[str]:
    """Blank lines between sentences, none inside a table or a list."""
    out: list[str] = []
    for line in lines:
        if out and not (line.startswith(("|", "- ")) and out[-1].startswith(("|", "- "))):
            out.append("")
        out.append(line)
    return out
