"""Learning curves: the three denoiser stages at a multiple of their steps, and what that buys
(issue #20): stage 1's PSNR, FID/FVD against the still frame and the VAE ceiling, the lip-sync
and style gaps in standard errors, and the training minutes.

    # in a scratch checkout whose `svp pipeline run` finished (its data is replaced):
    .venv/bin/python benchmarks/learning_curves.py train PROJECT 0.5 --keep DIR
    .venv/bin/python benchmarks/learning_curves.py table 0.5=DIR 1=DIR 2=DIR \\
        --out benchmarks/learning_curves.md --plot benchmarks/learning_curves.png

`train` multiplies `steps` and `image_steps` of `train_stage1..3` in PROJECT's params.yaml
(the style extractor, SyncNet and the VAE keep theirs: they are the measuring tools and the
ceiling), runs `dvc repro evaluate` there, and keeps params.yaml, reports/ and each stage's
minutes in DIR. `table` reads such folders (a finished project's folder works as well).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from datasets import read_reports
from ruamel.yaml import YAML
from table import cpu_name, emit

STAGES = ("train_stage1", "train_stage2", "train_stage3")


def scale_steps(project: Path, scale: float) -> None:
    """Set the denoiser stages' steps to `scale` × the committed params.yaml's, comments kept."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.representer.add_representer(  # null stays null, not an empty value
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    base = rt.load(subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=project,
                                  check=True, capture_output=True, text=True).stdout)
    params = project / "params.yaml"
    doc = rt.load(params.read_text())
    for stage in STAGES:
        for key in ("steps", "image_steps"):
            doc[stage][key] = round(base[stage][key] * scale)
    with params.open("w") as f:
        rt.dump(doc, f)


def train(project: Path, scale: float, keep: Path) -> None:
    """`dvc repro evaluate` at the scaled steps; each stage's minutes from when DVC starts it."""
    if not (project / "dvc.yaml").is_file() or not (project / ".venv/bin/dvc").is_file():
        raise SystemExit(f"{project}: not an installed SVP checkout (no dvc.yaml or .venv)")
    if not (math.isfinite(scale) and 0 < scale <= 100):
        raise SystemExit(f"scale must be a number above 0 and at most 100, got {scale}")
    scale_steps(project, scale)
    starts: list[tuple[str, float]] = []
    start = time.time()
    bin_dir = project.resolve() / ".venv" / "bin"  # the stages call its `svp`
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    with subprocess.Popen([str(bin_dir / "dvc"), "repro", "evaluate"], cwd=project, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as repro:
        for line in repro.stdout:
            print(line, end="", flush=True)
            if line.startswith("Running stage '"):
                starts.append((line.split("'")[1], time.time()))
    if repro.returncode:
        raise SystemExit(f"{project}: dvc repro evaluate failed (exit {repro.returncode})")
    starts.append(("end", time.time()))
    minutes = {stage: (end - begin) / 60 for (stage, begin), (_, end) in pairwise(starts)}
    minutes["total"] = (time.time() - start) / 60
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(project / "params.yaml", keep / "params.yaml")
    shutil.rmtree(keep / "reports", ignore_errors=True)
    shutil.copytree(project / "reports", keep / "reports")
    (keep / "minutes.json").write_text(json.dumps(minutes, indent=1))
    print(json.dumps(minutes, indent=1))


def _se(gap: float, se: float) -> float:
    """A distance gap (full − ablation) in standard errors, positive where the full model is
    better (closer to the real landmarks)."""
    return -gap / se if se else math.nan


def measures(r: dict) -> dict[str, float]:
    """The numbers the table and the plot show, for one scale (gaps in standard errors)."""
    ev, checks = r["evaluate"], r["evaluate"]["checks"]

    def ratio(protocol: str, metric: str, row: str) -> float:
        return ev[protocol]["full"][metric] / ev[protocol][row][metric]

    def check(name: str) -> float:
        gap, se = checks[name]["gap"], checks[name]["se"]
        return -_se(gap, se) if name.endswith(".sync_c") else _se(gap, se)  # higher is better

    return {
        "stage 1 PSNR (dB)": r["stage1"]["psnr"],
        "reconstruction PSNR (dB)": ev["reconstruction"]["full"]["psnr"],
        **{f"{p} FVD / still frame": ratio(p, "fvd", "reference_repeated")
           for p in ("reconstruction", "style_transfer")},
        **{f"{p} FVD / VAE ceiling": ratio(p, "fvd", "vae_ceiling")
           for p in ("reconstruction", "style_transfer")},
        **{f"{p} FID / still frame": ratio(p, "fid", "reference_repeated")
           for p in ("reconstruction", "style_transfer")},
        "stage 2 lip sync M-LMD (s.e.)": _se(r["stage2"]["m_lmd_own_minus_other"],
                                        r["stage2"]["m_lmd_own_minus_other_se"]),
        "reconstruction lip sync M-LMD (s.e.)":
            check("reconstruction.full_beats_other_speech.m_lmd"),
        "style transfer lip sync M-LMD (s.e.)":
            check("style_transfer.full_beats_other_speech.m_lmd"),
        "reconstruction lip sync Sync-C (s.e.)":
            check("reconstruction.full_beats_other_speech.sync_c"),
        "style transfer lip sync Sync-C (s.e.)":
            check("style_transfer.full_beats_other_speech.sync_c"),
        "style F-LMD (s.e.)": check("style_transfer.full_beats_no_style.f_lmd"),
        "style M-LMD (s.e.)": check("style_transfer.full_beats_no_style.m_lmd"),
        "stage 3 style (s.e.)": _se(r["stage3"]["f_lmd_style_minus_off"],
                                    r["stage3"]["f_lmd_style_minus_off_se"]),
        "checks passed": sum(c["passed"] for c in checks.values()),
    }


TARGETS = {"stage 1 PSNR (dB)": 23.0, "reconstruction FVD / VAE ceiling": 1.2,
           "style_transfer FVD / VAE ceiling": 1.2, "reconstruction FID / still frame": 2.0,
           "style_transfer FID / still frame": 2.0, "stage 2 lip sync M-LMD (s.e.)": 4.0,
           "reconstruction lip sync M-LMD (s.e.)": 4.0, "style transfer lip sync M-LMD (s.e.)": 4.0,
           "style F-LMD (s.e.)": 3.0, "style M-LMD (s.e.)": 3.0}


def _read_run(folder: Path) -> dict:
    try:
        run = read_reports(folder)
    except FileNotFoundError as err:
        raise SystemExit(f"{folder}: {err.filename} is missing (not a finished run)") from None
    minutes = folder / "minutes.json"
    run["minutes"] = json.loads(minutes.read_text()) if minutes.is_file() else {}
    return run


def _steps(r: dict) -> str:
    return " / ".join(str(r["params"][s]["steps"]) for s in STAGES)


def _training_minutes(r: dict) -> str:
    m = r["minutes"]
    return f"{sum(m[f'train_stage{i}'] for i in (1, 2, 3)):.1f}" if "train_stage1" in m else "—"


def _needed(scales: list[float], values: list[float], target: float, key: str) -> str:
    """Where a line through the two largest scales, against log2(steps), reaches the target:
    a rough reading of the curve, not a promise."""
    lower_is_better = "/" in key  # the FID/FVD ratios
    (s0, v0), (s1, v1) = zip(scales[-2:], values[-2:], strict=True)
    if (v1 <= target) if lower_is_better else (v1 >= target):
        return "reached"
    slope = (v1 - v0) / math.log2(s1 / s0)
    if (slope >= 0) if lower_is_better else (slope <= 0):
        return "not by more steps (flat or worse)"
    needed = s1 * 2 ** ((target - v1) / slope)
    return f"about {needed:.{1 if needed < 10 else 0}f}× steps"


def table(runs: dict[str, dict]) -> list[str]:
    names = list(runs)
    rows = {name: measures(r) for name, r in runs.items()}
    scales = [float(n) for n in names]
    lines = [f"CPU: {cpu_name()}. Steps scaled in `train_stage1..3` (steps and image_steps); "
             "the VAE, style extractor and SyncNet unchanged.", "",
             "| measure | target | " + " | ".join(f"{n}× steps" for n in names)
             + " | the 2 largest scales say |",
             "|---|---|" + "---|" * len(names) + "---|",
             "| steps (stage 1 / 2 / 3) | | " + " | ".join(_steps(r) for r in runs.values())
             + " | |",
             "| training minutes (stages 1-3) | | "
             + " | ".join(_training_minutes(r) for r in runs.values()) + " | |"]
    for key in rows[names[0]]:
        values = [rows[n][key] for n in names]
        target = TARGETS.get(key)
        reading = _needed(scales, values, target, key) if target is not None else ""
        shown = " | ".join(f"{v:.0f}" if key == "checks passed" else f"{v:.2f}" for v in values)
        lines.append(f"| {key} | {'' if target is None else target} | {shown} | {reading} |")
    return lines


PANELS: list[tuple[str, tuple[str, ...], Callable[[dict], float] | None]] = [
    ("PSNR (dB)", ("stage 1 PSNR (dB)", "reconstruction PSNR (dB)"),
     lambda r: r["vae"]["reconstruction_psnr"]),
    ("FVD / VAE ceiling", ("reconstruction FVD / VAE ceiling", "style_transfer FVD / VAE ceiling"),
     None),
    ("FID / still frame", ("reconstruction FID / still frame", "style_transfer FID / still frame"),
     None),
    ("lip sync, own − other speech (s.e.)",
     ("stage 2 lip sync M-LMD (s.e.)", "reconstruction lip sync M-LMD (s.e.)",
      "style transfer lip sync M-LMD (s.e.)", "reconstruction lip sync Sync-C (s.e.)",
      "style transfer lip sync Sync-C (s.e.)"), None),
    ("style, full − w/o style (s.e.)",
     ("style F-LMD (s.e.)", "style M-LMD (s.e.)", "stage 3 style (s.e.)"), None),
]


def plot(runs: dict[str, dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [float(n) for n in runs]
    rows = [measures(r) for r in runs.values()]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (title, keys, ceiling) in zip(axes, PANELS, strict=True):
        for key in keys:
            ax.plot(scales, [row[key] for row in rows], marker="o", label=key)
            if key in TARGETS:
                ax.axhline(TARGETS[key], color="grey", linestyle=":", linewidth=1)
        if ceiling is not None:
            ax.axhline(ceiling(next(iter(runs.values()))), color="black", linestyle="--",
                       linewidth=1, label="VAE ceiling")
        ax.set_xscale("log", base=2)
        ax.set_xticks(scales, [f"{s:g}×" for s in scales])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("denoiser steps")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("train")
    run.add_argument("project", type=Path)
    run.add_argument("scale", type=float)
    run.add_argument("--keep", type=Path, required=True)
    show = sub.add_parser("table")
    show.add_argument("runs", nargs="+", metavar="SCALE=FOLDER")
    show.add_argument("--out", type=Path)
    show.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.command == "train":
        train(args.project, args.scale, args.keep)
        return
    runs = {name: _read_run(Path(path)) for name, path in (r.split("=", 1) for r in args.runs)}
    runs = dict(sorted(runs.items(), key=lambda kv: float(kv[0])))
    emit(table(runs), args.out)
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
