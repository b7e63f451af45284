"""`svp data synth` (DVC stage `synth`): write the procedural dataset, then track the run."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from components.config import SynthConfig
from components.synth.generate import synthesize_dataset
from components.tracking import log_stage


def synth_stage(cfg: SynthConfig, out_dir: str | Path | None = None) -> dict:
    started = time.time()
    meta = synthesize_dataset(cfg, out_dir)
    root = Path(out_dir or cfg.out_dir)
    log_stage("svp-data", "synth", asdict(cfg) | {"out_dir": str(root)},
              {"n_clips": meta["n_clips"], "n_identities": len(meta["identities"])},
              [root / "dataset.json"], started=started)
    return meta
