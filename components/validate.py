"""`svp data validate`: a Great Expectations suite over the manifest, and a quarantine.

Each expectation names a column and a rule; every sample a rule rejects is quarantined with one
line per failed rule (never deleted), the rest go to the validated manifest that later stages
read. The stage fails only when the quarantined share exceeds `max_failing_share`.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.atomic import write_parquet, write_text
from components.config import ValidateConfig
from components.errors import SvpError
from components.expectations import Rule, run_suite
from components.manifest import MANIFEST_SCHEMA
from components.tracking import log_stage

log = logging.getLogger(__name__)

LOGGED_QUARANTINES = 20  # the rest are in the report and quarantine.parquet
QUARANTINE_SCHEMA = MANIFEST_SCHEMA.append(pa.field("reasons", pa.string()))


def build_rules(cfg: ValidateConfig) -> list[Rule]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    file_audio = {"row_condition": Column("audio_source") == "file"}
    return [
        Rule(e.ExpectColumnValuesToBeNull(column="probe_error"), "{value}"),
        Rule(e.ExpectColumnValuesToBeNull(column="layout_problem"), "{value}"),
        Rule(e.ExpectColumnValuesToBeNull(column="duplicate_of"), "{value}"),
        Rule(e.ExpectColumnValuesToBeUnique(column="sample_id"), "duplicate sample id {value}"),
        Rule(e.ExpectColumnValuesToBeBetween(column="fps", min_value=cfg.min_fps,
                                             max_value=cfg.max_fps),
             f"frame rate {{value}} outside [{cfg.min_fps}, {cfg.max_fps}]"),
        Rule(e.ExpectColumnValuesToBeBetween(column="n_frames", min_value=cfg.min_frames),
             f"only {{value}} frames (fewer than {cfg.min_frames})"),
        Rule(e.ExpectColumnValuesToBeBetween(column="duration_s", max_value=cfg.max_duration_s),
             f"duration {{value}} s exceeds {cfg.max_duration_s} s"),
        Rule(e.ExpectColumnValuesToBeBetween(column="width", min_value=cfg.min_side),
             f"frame width {{value}} below {cfg.min_side}"),
        Rule(e.ExpectColumnValuesToBeBetween(column="height", min_value=cfg.min_side),
             f"frame height {{value}} below {cfg.min_side}"),
        Rule(e.ExpectColumnValuesToBeBetween(column="audio_sample_rate",
                                             min_value=cfg.min_sample_rate),
             f"audio sample rate {{value}} Hz below {cfg.min_sample_rate} Hz"),
        Rule(e.ExpectColumnValuesToBeBetween(column="audio_channels",
                                             max_value=cfg.max_audio_channels, **file_audio),
             f"audio file has {{value}} channels (at most {cfg.max_audio_channels})"),
        Rule(e.ExpectColumnValuesToBeBetween(column="audio_dbfs", min_value=cfg.min_audio_dbfs),
             f"audio is silent or inaudible ({{value}} dBFS < {cfg.min_audio_dbfs})"),
        Rule(e.ExpectColumnValuesToBeBetween(column="av_mismatch_s",
                                             max_value=cfg.max_av_mismatch_s),
             f"audio and video lengths differ by {{value}} s (> {cfg.max_av_mismatch_s} s)"),
    ]


def validate(cfg: ValidateConfig, manifest: str | Path | None = None) -> dict:
    """Split the manifest into validated samples and a quarantine; write the report and metrics
    (`enforce_threshold` then decides whether the stage fails)."""
    manifest = Path(manifest or cfg.manifest)
    if not manifest.is_file():
        raise SvpError(f"{manifest}: manifest not found (run `svp data ingest` first)")
    table = pq.read_table(manifest)
    if table.schema.names != MANIFEST_SCHEMA.names:
        raise SvpError(f"{manifest}: not an SVP manifest (columns differ from the schema)")
    df = table.to_pandas()
    df["av_mismatch_s"] = (df["audio_duration_s"] - df["duration_s"]).abs()
    df["duplicate_of"] = duplicates(df)
    summary, reasons = run_suite(df, build_rules(cfg))
    df = df.drop(columns=["av_mismatch_s", "duplicate_of"])

    failing = df["sample_id"].isin(reasons)
    passed, quarantined = df[~failing], df[failing].copy()
    quarantined["reasons"] = [" | ".join(reasons[s]) for s in quarantined["sample_id"]]
    for row in quarantined.head(LOGGED_QUARANTINES).itertuples():
        log.warning("quarantined %s: %s", row.video_path, row.reasons)
    if len(quarantined) > LOGGED_QUARANTINES:
        log.warning("... and %d more quarantined; see the report",
                    len(quarantined) - LOGGED_QUARANTINES)

    out = Path(cfg.out_dir)
    write_parquet(out / "manifest.parquet", _table(passed, MANIFEST_SCHEMA))
    write_parquet(out / "quarantine.parquet", _table(quarantined, QUARANTINE_SCHEMA))
    share = len(quarantined) / len(df) if len(df) else 0.0
    metrics = {
        "n_samples": len(df), "n_passed": len(passed), "n_quarantined": len(quarantined),
        "failing_share": round(share, 4), "max_failing_share": cfg.max_failing_share,
        "n_identities": int(passed["identity"].nunique()),
        "n_test_samples": int((passed["split"] == "test").sum()),
        "hours": round(float(passed["duration_s"].sum()) / 3600, 4),
        "passed": share <= cfg.max_failing_share,
    }
    report = Path(cfg.report_dir)
    write_text(report / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text(report / "report.html", render_report(metrics, summary, quarantined))
    return metrics


def duplicates(df: pd.DataFrame) -> list[str | None]:
    """For each sample whose bytes an earlier one (by sample id) already has: which one."""
    first: dict[str, tuple] = {}
    out: list[str | None] = [None] * len(df)
    order = df.reset_index(drop=True).sort_values("sample_id")
    for i, row in order.iterrows():
        if row["content_hash"] is None or row["content_hash"] != row["content_hash"]:
            continue
        if row["content_hash"] not in first:
            first[row["content_hash"]] = (row["sample_id"], row["video_path"], row["split"])
            continue
        sample_id, video, split = first[row["content_hash"]]
        across = " — across the train/test split" if split != row["split"] else ""
        out[i] = f"same bytes as {sample_id} ({video}){across}"
    return out


def enforce_threshold(metrics: dict, cfg: ValidateConfig) -> None:
    """Fail the stage when too large a share of the samples was quarantined."""
    if metrics["failing_share"] > cfg.max_failing_share:
        raise SvpError(
            f"validation failed: {metrics['n_quarantined']} of {metrics['n_samples']} samples "
            f"quarantined ({metrics['failing_share']:.0%} > max_failing_share "
            f"{cfg.max_failing_share:.0%}); see {Path(cfg.report_dir) / 'report.html'}")


def _table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


def render_report(metrics: dict, summary: list[dict], quarantined: pd.DataFrame) -> str:
    """A self-contained HTML page: totals, every expectation, every quarantined sample."""
    verdict = "PASSED" if metrics["passed"] else "FAILED"
    totals = pd.DataFrame([metrics]).T.rename(columns={0: "value"})
    columns = ["sample_id", "video_path", "audio_path", "reasons"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SVP data validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>SVP data validation: {verdict}</h1>
<h2>Totals</h2>{totals.to_html()}
<h2>Expectations (Great Expectations suite <code>svp-manifest</code>)</h2>
{pd.DataFrame(summary).to_html(index=False)}
<h2>Quarantined samples ({len(quarantined)})</h2>
{quarantined[columns].to_html(index=False) if len(quarantined) else "<p>None.</p>"}
<p>{html.escape("Quarantined files are listed here and left untouched on disk.")}</p>
</body></html>
"""


def validate_stage(cfg: ValidateConfig, manifest: str | Path | None = None) -> dict:
    """The DVC stage `validate`: validate, track the run in MLflow, then apply the threshold."""
    started = time.time()
    metrics = validate(cfg, manifest)
    report = Path(cfg.report_dir)
    log_stage("svp-data", "validate", asdict(cfg), metrics,
              [report / "report.html", report / "metrics.json"], started=started)
    enforce_threshold(metrics, cfg)
    return metrics
