"""`svp promote` (DVC stage `promote`): the evaluated generator folder, byte for byte, becomes a
version of `svp-generator` with alias `challenger`, and `champion` when it beats the champion
(`rule.py`). Every step is idempotent under retries: the same folder is the same version
(`register_generator`), tags and aliases are set, not added.

The version pins what it is built from: each part's registered version (the version whose
weights digest, recorded when the generator was assembled, is the part's: `svp.part.<part>`
tags) and the evaluation it earned (`svp.evaluation`: both protocols'
tables and the evaluation set's fingerprint). A champion evaluated on another set (other test
clips, other windows or pixels) is evaluated again on this one before the two are compared, and
that measurement is kept on its version (`svp.evaluation.<set>`).
Every decision goes to `decision` (JSON) and to the new version's tags: the metrics compared,
the deltas, the git commit, the DVC data hashes and the params. `dry_run` decides and reports
without registering, moving an alias or writing a file.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from components.atomic import write_text
from components.config import Params
from components.errors import SvpError
from components.evaluation.protocols import PROTOCOLS
from components.media import folder_hash
from components.promotion.rule import Decision, decide
from components.registry.generator import DIGEST_TAG, generator_folder, register_generator
from components.runtime import mlflow_tracking_uri
from components.tracking import dvc_out_hash, git_commit
from components.training.registry import WEIGHTS_TAG

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
EVALUATION_TAG = "svp.evaluation"


def _evaluation_summary(metrics: dict) -> dict:
    """What a version keeps of its evaluation: the protocols' tables and the set's fingerprint."""
    return {"evaluation_set": metrics["evaluation_set"], **{p: metrics[p] for p in PROTOCOLS}}


def _champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _champion_metrics(client, held, challenger: dict, params: Params, dry_run: bool) -> dict:
    """The champion's evaluation on the challenger's set: from its tags, or measured again (and
    then kept on the champion's version as `svp.evaluation.<set>`, so that the next promotion
    on this set does not measure it again; a dry run tags nothing)."""
    kept = json.loads(held.tags.get(EVALUATION_TAG, "null"))
    if kept and kept.get("evaluation_set") == challenger["evaluation_set"]:
        return kept
    remeasured = f"{EVALUATION_TAG}.{challenger['evaluation_set']}"
    if remeasured in held.tags:
        return json.loads(held.tags[remeasured])
    log.info("champion v%s was evaluated on another set; evaluating it on this one", held.version)
    from components.evaluation.stage import evaluate

    folder = generator_folder(f"models:/{held.name}/{held.version}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(params.evaluate, generator=str(folder), out_dir=tmp, report_videos=0)
        again = evaluate(cfg, log_run=not dry_run)
    if again["evaluation_set"] != challenger["evaluation_set"]:
        raise SvpError(f"champion v{held.version}: its evaluation set differs from the "
                       "challenger's even when measured again (evaluate params changed?)")
    summary = _evaluation_summary(again)
    if not dry_run:
        client.set_model_version_tag(held.name, held.version, remeasured, json.dumps(summary))
    return summary


def _data(metrics: dict, params: Params) -> list[str]:
    """The DVC outputs the decision rests on: the held-out data and the generator folder."""
    return [params.evaluate.latents_dir, params.evaluate.features_dir,
            metrics["generator"]["folder"]]


def _pins(client, parts: dict) -> dict[str, str]:
    """Each part's registered version, found by the weights digest the generator recorded."""
    pins = {}
    for part, made in parts.items():
        found = client.search_model_versions(f"tags.`{WEIGHTS_TAG}` = '{made['weights']}'") \
            if made.get("weights") else []
        newest = max(found, key=lambda v: int(v.version)) if found else None
        pins[f"svp.part.{part}.version"] = f"models:/{newest.name}/{newest.version}" if newest \
            else f"{made['source']} (not registered)"
    return pins


def _record(decision: Decision, metrics: dict, params: Params, held, version: str | None,
            dry_run: bool) -> dict:
    return {"promoted": decision.promote, "reason": decision.reason,
            "mean_gain": decision.mean_gain, "compared": decision.compared,
            "challenger_version": version,
            "previous_champion_version": str(held.version) if held else None,
            "champion_version": version if decision.promote and version else
            (str(held.version) if held else None),
            "dry_run": dry_run, "evaluation_set": metrics["evaluation_set"],
            "generator": metrics["generator"], "git_commit": git_commit() or "unknown",
            "dvc": {path: dvc_out_hash(path) for path in _data(metrics, params)},
            "params": {"promote": asdict(params.promote), "evaluate": asdict(params.evaluate),
                       "sampling": asdict(params.diffusion.sampling)},
            "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def promote(params: Params, dry_run: bool = False, root: str | Path = ".") -> dict:
    import mlflow

    cfg = params.promote
    path = Path(cfg.metrics)
    if not path.is_file():
        raise SvpError(f"{path}: no evaluation to promote (run `svp evaluate` first)")
    metrics = json.loads(path.read_text())
    uri = mlflow_tracking_uri(root)
    client = mlflow.MlflowClient(uri)
    held = _champion(client, cfg.model_name)
    if held and held.tags.get(DIGEST_TAG) == metrics["generator"]["digest"]:
        decision = Decision(True, f"v{held.version} is this very generator: it stays champion",
                            {}, None)  # a retried promote decides as the first try did
    else:
        champion = _champion_metrics(client, held, metrics, params, dry_run) if held else None
        decision = decide(metrics, champion, cfg)
    if dry_run:
        return _record(decision, metrics, params, held, None, dry_run=True)

    gen = metrics["generator"]
    if folder_hash(gen["folder"]) != gen["digest"]:
        raise SvpError(f"{gen['folder']}: changed since it was evaluated (run `svp evaluate` "
                       "again); promote registers exactly the bytes evaluate measured")
    version = register_generator(gen["folder"], cfg.model_name, root, "promote", gen["digest"])
    record = _record(decision, metrics, params, held, version, dry_run=False)
    tags = _pins(client, gen["parts"]) | {
        EVALUATION_TAG: json.dumps(_evaluation_summary(metrics)),
        "svp.decision": "champion" if decision.promote else "challenger",
        "svp.decision.reason": decision.reason,
        "svp.decision.compared": json.dumps(decision.compared),
        "svp.decision.previous_champion": str(record["previous_champion_version"]),
        "git.commit": record["git_commit"],
        **{f"dvc.{Path(p).name}": h for p, h in record["dvc"].items()},
        "svp.params": json.dumps(record["params"])}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    client.set_registered_model_alias(cfg.model_name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    write_text(cfg.decision, json.dumps(record, indent=2) + "\n")
    log.info("%s v%s: %s (%s)", cfg.model_name, version,
             CHAMPION if decision.promote else f"{CHALLENGER} only", decision.reason)
    return record
