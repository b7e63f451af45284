"""Issue #20's targets on more than one embedded dataset: the same code and params, another
synth seed and identity count (a params override), side by side.

    .venv/bin/python benchmarks/datasets.py NAME=PROJECT [NAME=PROJECT ...] [--out FILE]

Each PROJECT is a checkout whose `svp pipeline run` finished (its `reports/` are read, nothing is
run). A value that holds on one dataset only is tuned to it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import yaml
from table import emit

Row = tuple[str, str, Callable[[dict], str]]


def read_reports(project: Path) -> dict:
    """A finished project's params and the metrics every stage reported."""
    reports = project / "reports"
    files = {"params": project / "params.yaml"} | {
        name: reports / name / "metrics.json"
        for name in ("vae", "stage1", "stage2", "stage3", "syncnet", "evaluate")} | {
        "style": reports / "style" / "clustering.json"}
    return {name: yaml.safe_load(path.read_text()) if path.suffix == ".yaml"
            else json.loads(path.read_text()) for name, path in files.items()}


def _emotions_helped(r: dict) -> str:
    """How many held-out emotions' style-transfer cases the style brings closer to the target
    (the check's rows: `evaluate.ablation_sampler`'s), on each landmark measure."""
    check = r["evaluate"]["checks"]["style_transfer.full_beats_no_style.f_lmd"]
    by_emotion = r["evaluate"]["style_transfer_by_emotion"]
    helped = [sum(rows[check["row"]][m] < rows["no_style"][m] for rows in by_emotion.values())
              for m in ("f_lmd", "m_lmd")]
    return f"{helped[0]} / {helped[1]} of {len(by_emotion)}"


def _against(protocol: str, metric: str, row: str) -> Callable[[dict], str]:
    """The full model's set-level metric over another row's (the still frame, the VAE's)."""
    def show(r: dict) -> str:
        rows = r["evaluate"][protocol]
        full, other = rows["full"][metric], rows[row][metric]
        return f"{full:.0f} / {other:.0f} = {full / other:.2f}x"
    return show


def _gap(gap: float, se: float, passed: bool = True) -> str:
    """A gap and its standard error (negative: better, for distances)."""
    return f"{gap:+.3f} ± {se:.3f} ({abs(gap) / se:.1f} s.e.)" + ("" if passed else ", fails")


def _check(name: str) -> Callable[[dict], str]:
    """An evaluation check's gap; "(fast)" where its rows were sampled with the fast sampler."""
    def show(r: dict) -> str:
        check = r["evaluate"]["checks"][name]
        sampled = " (fast)" if check.get("row") == "fast" else ""
        return _gap(check["gap"], check["se"], check["passed"]) + sampled
    return show


def _stage_gap(report: str, key: str) -> Callable[[dict], str]:
    return lambda r: _gap(r[report][key], r[report][f"{key}_se"])


def _full_and_real(protocol: str, metric: str) -> Callable[[dict], str]:
    def show(r: dict) -> str:
        rows = r["evaluate"][protocol]
        return f"{rows['full'][metric]:.3f} / {rows['real'][metric]:.3f}"
    return show


def _fast_within(r: dict) -> str:
    compared = [m for p in r["evaluate"]["fast_vs_paper"].values() for m in p.values()]
    worst = max(compared, key=lambda m: m["worse"])
    spread = "" if worst.get("se") is None else f" ± {100 * worst['se']:.1f}"
    return (f"{sum(m['within'] for m in compared)} of {len(compared)} "
            f"(worst {100 * worst['worse']:+.1f}%{spread})")


def _clustering(r: dict) -> str:
    both, expression = (r["style"]["clustering_strength"][k] for k in ("both", "exp"))
    return f"{both:.2f} / {expression:.2f} = {both / expression:.3f}"


def _syncnet_gap(r: dict) -> str:
    gap = r["syncnet"]["sync_c"]["gap"]
    return f"{gap['mean']:+.2f} ± {gap['se']:.2f}"


ROWS: list[Row] = [
    ("dataset", "", lambda r: f"seed {r['params']['synth']['seed']}, "
     f"{r['params']['synth']['n_identities']} identities"),
    ("VAE reconstruction PSNR (the ceiling)", "",
     lambda r: f"{r['vae']['reconstruction_psnr']:.1f} dB"),
    ("stage 1 PSNR, held-out faces", "≥ 23 dB", lambda r: f"{r['stage1']['psnr']:.1f} dB"),
    *((f"{p.replace('_', ' ')} {m.upper()}: full / {name}", target, _against(p, m, row))
      for m, name, row, target in (("fvd", "still frame", "reference_repeated", "< 1"),
                                   ("fvd", "VAE ceiling", "vae_ceiling",
                                    "≤ 1.2 where the ceiling ≥ the still frame"),
                                   ("fid", "still frame", "reference_repeated", "≤ 2"))
      for p in ("reconstruction", "style_transfer")),
    ("stage 2 M-LMD own − other speech", "≥ 4 s.e.",
     _stage_gap("stage2", "m_lmd_own_minus_other")),
    ("reconstruction M-LMD full − other speech", "≥ 4 s.e.",
     _check("reconstruction.full_beats_other_speech.m_lmd")),
    ("style transfer M-LMD full − other speech", "≥ 4 s.e.",
     _check("style_transfer.full_beats_other_speech.m_lmd")),
    ("reconstruction Sync-C full − other speech", "",
     _check("reconstruction.full_beats_other_speech.sync_c")),
    ("style transfer Sync-C full − other speech", "",
     _check("style_transfer.full_beats_other_speech.sync_c")),
    ("style transfer F-LMD full − w/o style", "≥ 3 s.e.",
     _check("style_transfer.full_beats_no_style.f_lmd")),
    ("style transfer M-LMD full − w/o style", "≥ 3 s.e.",
     _check("style_transfer.full_beats_no_style.m_lmd")),
    ("held-out emotions where the style helps: F-LMD / M-LMD", "all", _emotions_helped),
    ("stage 3 F-LMD style − off", "", _stage_gap("stage3", "f_lmd_style_minus_off")),
    ("style space: clustering both / expression only", "≥ 1.05", _clustering),
    ("SyncNet: held-out offsets within 1 frame", "≥ 80%",
     lambda r: f"{100 * r['syncnet']['offset_within_1']:.0f}% of {r['syncnet']['windows']}"),
    ("SyncNet: Sync-C own − other speech", "", _syncnet_gap),
    ("identity network AUC (held-out real clips)", "",
     lambda r: f"{r['evaluate']['identity_network']['auc']:.2f}"),
    ("reconstruction Sync-C: full / real", "", _full_and_real("reconstruction", "sync_c")),
    ("reconstruction CSIM: full / real", "", _full_and_real("reconstruction", "csim")),
    ("fast sampler within tolerance of the paper's", "all", _fast_within),
    ("evaluation cases: reconstruction / style transfer", "≥ 6",
     lambda r: "{reconstruction} / {style_transfer}".format(**r["evaluate"]["cases"])),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+", metavar="NAME=PROJECT")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = {name: read_reports(Path(path))
            for name, path in (p.split("=", 1) for p in args.projects)}
    lines = ["| measure | target | " + " | ".join(runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    for label, target, show in ROWS:
        lines.append(f"| {label} | {target} | " + " | ".join(show(r) for r in runs.values()) + " |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
