"""The evaluation report: one self-contained HTML page (tables laid out like the paper's Tables
1-3, the checks, and side-by-side videos that play in the browser)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from components.atomic import write_text
from components.evaluation.protocols import ROW_TITLES, ROWS
from components.generation.pipeline import Sampling

VIDEO_SIDE = 192  # each panel of a side-by-side video, pixels
COLUMNS = (("fid", "FID↓", 1), ("fvd", "FVD↓", 1), ("psnr", "PSNR↑", 2), ("ssim", "SSIM↑", 3),
           ("f_lmd", "F-LMD↓", 3), ("m_lmd", "M-LMD↓", 3), ("sync_c", "Sync-C↑", 2),
           ("sync_d", "Sync-D↓", 2), ("csim", "CSIM↑", 3))
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.25em .7em;text-align:right;
border-bottom:1px solid #ddd}th:first-child,td:first-child{text-align:left}
tr.full td{font-weight:600}.pass{color:#176f2c}.fail{color:#b3261e}
figure{display:inline-block;margin:0 1.5em 1.5em 0}figcaption{font-size:.85em;color:#555}"""


def side_by_side(videos: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Frames of equally long videos (F, R, R, 3) next to each other, each VIDEO_SIDE high."""
    for frames in zip(*videos, strict=True):
        yield np.concatenate([cv2.resize(f, (VIDEO_SIDE, VIDEO_SIDE),
                                         interpolation=cv2.INTER_CUBIC) for f in frames], axis=1)


def _number(value: float, digits: int) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _protocol_table(results: dict) -> str:
    head = "".join(f"<th>{title}</th>" for _, title, _ in COLUMNS)
    rows = []
    for row in (*ROWS, "real"):
        cells = "".join(f"<td>{_number(results[row].get(key), digits)}</td>"
                        for key, _, digits in COLUMNS)
        rows.append(f'<tr class="{row}"><td>{html.escape(ROW_TITLES[row])}</td>{cells}</tr>')
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def _emotion_table(by_emotion: dict) -> str:
    head = "".join(f"<th>{html.escape(ROW_TITLES[r])}<br>F-LMD / M-LMD</th>" for r in ROWS)
    rows = [f"<tr><td>{html.escape(emotion)}</td>" + "".join(
        f"<td>{_number(v[r]['f_lmd'], 2)} / {_number(v[r]['m_lmd'], 2)}</td>" for r in ROWS)
        + "</tr>" for emotion, v in by_emotion.items()]
    return f"<table><tr><th>emotion</th>{head}</tr>{''.join(rows)}</table>"


def _style_table(clustering: dict) -> str:
    if not clustering:
        return "<p>No style clustering table (train_style's report was not found).</p>"
    strength, random = clustering.get("clustering_strength", {}), clustering.get("random_init", {})
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_number(v, 2)}</td>"
                   f"<td>{_number(random.get(k, float('nan')), 2)}</td></tr>"
                   for k, v in strength.items())
    return ("<table><tr><th>style extractor input</th><th>clustering strength↑</th>"
            f"<th>random init</th></tr>{rows}</table>")


def _identity_note(separation: dict) -> str:
    """How far CSIM can be trusted on these faces: the identity network's AUC on real frames."""
    if separation.get("auc") is None:
        return "The identity network's separation of the held-out identities was not measured."
    return (f"On real frames of the held-out clips ({separation['faces']} faces) the identity "
            f"network tells same from other identities with an AUC of {separation['auc']:.2f} "
            f"(mean similarity {separation['same']:.3f} same, {separation['other']:.3f} "
            "other): read CSIM differences against that gap.")


def _checks_table(checks: dict) -> str:
    rows = []
    for name, c in checks.items():
        verdict = '<span class="pass">yes</span>' if c["passed"] else \
            '<span class="fail">no</span>'
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{verdict}</td>"
                    f"<td>{html.escape(ROW_TITLES.get(c.get('row', 'full'), ''))}</td>"
                    f"<td>{_number(c['gap'], 3)} ± {_number(c['se'], 3)}</td></tr>")
    return ("<table><tr><th>check</th><th>passed</th><th>the full model's row (sampled as the "
            "ablation rows)</th><th>full − other (± s.e. over cases)</th>"
            f"</tr>{''.join(rows)}</table>")


def _fast_table(fast_vs_paper: dict, fast: dict | None) -> str:
    if fast is None:
        return "<p>This generator has no fast sampler (it was assembled before there was one).</p>"
    head = "".join(f"<th>{html.escape(p.replace('_', ' '))}: paper / fast, change</th>"
                   for p in fast_vs_paper)
    metrics = next(iter(fast_vs_paper.values()))
    rows = []
    for metric in metrics:
        cells = []
        for values in fast_vs_paper.values():
            v = values[metric]
            verdict = "pass" if v["within"] else "fail"
            change = "–" if v["worse"] is None else f"{100 * v['worse']:+.1f}%"
            se = "" if v["se"] is None else f" ± {100 * v['se']:.1f}"
            cells.append(f"<td>{_number(v['paper'], 3)} / {_number(v['fast'], 3)}, "
                         f'<span class="{verdict}">{change}{se}</span></td>')
        rows.append(f"<tr><td>{html.escape(metric)}</td>{''.join(cells)}</tr>")
    return (f"<p>Fast sampler: {html.escape(Sampling(**fast).describe())}. Change: how much "
            "worse than the paper's sampler, relative (± its s.e. over the cases; for the "
            "set-level FID and FVD, a paired bootstrap over the cases).</p>"
            f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>")


def _long_video(result: dict | None) -> str:
    if not result:  # a report written before the long-video case existed
        return "<p>No long video.</p>"
    rows = "".join(f"<tr><td>{s['start_s']:.0f}</td><td>{_number(s['csim'], 3)} / "
                   f"{_number(r['csim'], 3)}</td><td>{_number(s['sync_c'], 2)} / "
                   f"{_number(r['sync_c'], 2)}</td><td>{_number(s['sync_d'], 2)} / "
                   f"{_number(r['sync_d'], 2)}</td></tr>"
                   for s, r in zip(result["segments"], result["real"]["segments"], strict=True))
    return (f"<p>{result['seconds']:.0f} s of identity {html.escape(result['identity'])}'s "
            f"test clips joined ({len(result['clips'])} clips), made in "
            f"{result['generation_s']:.0f} s with the {html.escape(result['sampler'])} sampler. "
            "Drift per minute: CSIM "
            f"{_number(result['csim_slope_per_min'], 3)}, Sync-C "
            f"{_number(result['sync_c_slope_per_min'], 2)} (the real clips joined the same "
            f"way: {_number(result['real']['csim_slope_per_min'], 3)} and "
            f"{_number(result['real']['sync_c_slope_per_min'], 2)}).</p>"
            '<p><img src="long_video.png" alt="CSIM and Sync-C per segment"></p>'
            '<p><img src="long_video_frames.png" alt="the reference, then frames from the start '
            'to the end"><br>the reference, then five frames from the first to the last</p>'
            "<table><tr><th>segment start, s</th><th>CSIM↑ generated / real</th>"
            "<th>Sync-C↑ generated / real</th><th>Sync-D↓ generated / real</th>"
            f"</tr>{rows}</table>")


def _videos(videos: list[dict]) -> str:
    figures = []
    for v in videos:
        caption = (f'{v["protocol"].replace("_", " ")}: target {v["target"]} ({v["emotion"]}), '
                   f'reference {v["reference"]}')
        figures.append(f'<figure><video controls loop preload="metadata" '
                       f'src="{html.escape(v["file"])}" poster="{html.escape(v["poster"])}">'
                       f"</video><figcaption>{html.escape(caption)}<br>target | full model | "
                       "w/o style</figcaption></figure>")
    return "".join(figures) or "<p>No videos (evaluate.report_videos is 0).</p>"


def write_report(path: Path, metrics: dict, videos: list[dict]) -> None:
    cases = metrics["cases"]
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>SVP evaluation</title><style>{STYLE}</style></head><body>
<h1>SVP evaluation on the held-out identities</h1>
<p>{cases['reconstruction']} reconstruction and {cases['style_transfer']} style-transfer cases of
{metrics['frames_per_case']} frames; the paper's sampler (Euler, {metrics['sampling']['steps']}
steps, guidance {metrics['sampling']['guidance']:g}) unless a row says otherwise, windows of
{metrics['sampling']['window']} frames (the generator's own settings). Evaluation set
{metrics['evaluation_set']}. Generator:
{html.escape(metrics['generator']['folder'])} (digest {metrics['generator']['digest'][:16]}),
parts {html.escape(str(metrics['generator']['parts']))}.</p>
<p>Sync-C / Sync-D: SyncNet confidence and distance against the target's speech
(syncnet_python's procedure; the network is <code>train_syncnet</code>'s, so the numbers are on
its own scale, not syncnet_v2's). CSIM: cosine similarity of dlib's face-recognition embedding
to the reference image. "Real clips" is their ceiling; "other speech" the lip-sync floor.
{_identity_note(metrics.get('identity_network') or {})}</p>
<h2>Table 1: reconstruction (own first frame, audio, Head-Kps and style)</h2>
{_protocol_table(metrics['reconstruction'])}
<h2>Table 2: style transfer (neutral reference, an emotional clip's audio, Head-Kps, style)</h2>
{_protocol_table(metrics['style_transfer'])}
<h3>Style transfer by emotion</h3>
{_emotion_table(metrics['style_transfer_by_emotion'])}
<h2>Table 3: style clustering (train_style)</h2>
{_style_table(metrics['style_clustering'])}
<h2>Checks</h2>
{_checks_table(metrics['checks'])}
<h2>The fast sampler against the paper's</h2>
{_fast_table(metrics['fast_vs_paper'], metrics['sampling']['fast'])}
<h2>A long video: identity and lip-sync drift</h2>
{_long_video(metrics.get('long_video'))}
<h2>Samples</h2>
{_videos(videos)}
</body></html>
"""
    write_text(path, page)
