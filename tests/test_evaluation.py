"""The evaluation stage and the champion gate: protocols, the promotion rule, and on the tiny
trained generator `svp evaluate` -> `svp promote` (dry run, first champion, then a worse
challenger that stays one)."""

from __future__ import annotations

import json
import re
from contextlib import chdir
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from components.config import EvaluateConfig, PromoteConfig
from components.diffusion.frames import Clip
from components.evaluation.protocols import ROWS, reconstruction_cases, style_transfer_cases
from components.evaluation.rows import protocol_rows
from components.evaluation.stage import evaluation_set
from components.media import decode_video, folder_hash
from components.promotion.rule import decide
from components.registry.generator import generator_folder
from tests.conftest import TINY_PROMOTE_COMPARE, svp, with_params

CASE_METRICS = {"sync_c", "sync_d", "csim"}  # per case; the real clips' row has only these
METRICS = {"psnr", "ssim", "f_lmd", "m_lmd", "fid", "fvd", "faces_found"} | CASE_METRICS


def clip(sample_id: str, identity: str, emotion: str, n: int = 24) -> Clip:
    t = np.arange(n)
    landmarks = np.zeros((n, 68, 2), np.float32)
    landmarks[:, 66, 1] = np.sin(t * (1 + len(sample_id) % 3))  # the mouth moves
    return Clip(sample_id, identity, emotion, f"{identity}/{emotion}", np.zeros((n, 4, 2, 2)),
                np.zeros((n, 8, 2)), landmarks, np.zeros((n, 5, 2, 4)), [])


def test_style_transfer_cases_take_the_same_identitys_neutral_reference():
    clips = [clip("A_happy_1", "A", "happy"), clip("A_neutral_1", "A", "neutral"),
             clip("A_sad_1", "A", "sad"), clip("B_happy_1", "B", "happy"),
             clip("B_sad_1", "B", "sad"), clip("C_neutral_1", "C", "neutral"),
             clip("C_sad_1", "C", "sad")]
    cases = style_transfer_cases(clips, 10, 8)
    targets = [clips[c.target].sample_id for c in cases]
    assert "B_happy_1" not in targets and "B_sad_1" not in targets  # B has no neutral clip
    assert [clips[c.target].emotion for c in cases][:2] == ["happy", "sad"]  # emotions alternate
    for c in cases:
        assert clips[c.reference].emotion == "neutral"
        assert clips[c.reference].identity == clips[c.target].identity
        assert clips[c.other_speech].identity == clips[c.target].identity
        assert c.other_speech != c.target
    by_level = [clip("A_happy_1", "A", "happy"), clip("A_happy_3", "A", "happy"),
                clip("A_neutral_1", "A", "neutral")]
    (strongest,) = style_transfer_cases(by_level, 1, 8, {"A_happy_1": 1, "A_happy_3": 3})
    assert by_level[strongest.target].sample_id == "A_happy_3"  # the most intense level first
    recon = reconstruction_cases(clips, 3, 8)
    assert [clips[c.target].identity for c in recon] == ["A", "B", "C"]  # identities alternate
    assert all(c.reference == c.target for c in recon)


def test_the_evaluation_set_changes_with_the_draws_and_the_measuring_networks_only():
    """Promotion compares a challenger with a champion only on the same set: the seed the
    rows are drawn from and the networks that measure them belong to it, how the work is
    batched or spread over processes does not."""
    clips = [clip("A_happy_1", "A", "happy"), clip("A_neutral_1", "A", "neutral")]
    cases = {"reconstruction": reconstruction_cases(clips, 2, 8)}
    cfg = EvaluateConfig()
    same = evaluation_set(clips, cases, cfg)
    assert evaluation_set(clips, cases, EvaluateConfig(case_batch=4, workers=1)) == same
    for changed in ({"seed": 1}, {"features_bf16": "off"}, {"bf16": "on"},
                    {"inception": "/models/other_inception.pt"}, {"fid_every": 2}):
        assert evaluation_set(clips, cases, EvaluateConfig(**changed)) != same, changed


def evaluation(m_lmd: float, fid: float, evaluation_set: str = "s") -> dict:
    row = {"m_lmd": m_lmd, "f_lmd": 1.0, "fid": fid, "fvd": 100.0}
    return {"evaluation_set": evaluation_set,
            "reconstruction": {"full": row}, "style_transfer": {"full": row}}


RULE = PromoteConfig(compare={"reconstruction/full/m_lmd": "lower",
                              "style_transfer/full/fid": "lower"}, min_improvement=0.01,
                     max_regression=0.05)


def test_the_rule_promotes_only_a_clear_overall_gain():
    first = decide(evaluation(2.0, 100.0), None, RULE)
    assert first.promote and "no champion" in first.reason
    better = decide(evaluation(1.8, 99.0), evaluation(2.0, 100.0), RULE)
    assert better.promote and better.mean_gain == pytest.approx((0.1 + 0.01) / 2)
    assert better.compared["reconstruction/full/m_lmd"]["delta"] == pytest.approx(-0.2)
    mixed = decide(evaluation(1.5, 110.0), evaluation(2.0, 100.0), RULE)  # one 10% worse
    assert not mixed.promote and "style_transfer/full/fid is 10.0% worse" in mixed.reason
    same = decide(evaluation(2.0, 100.0), evaluation(2.0, 100.0), RULE)
    assert not same.promote and "does not exceed" in same.reason
    noise = decide(evaluation(1.999, 100.0), evaluation(2.0, 100.0), RULE)  # 0.05% better
    assert not noise.promote
    unmeasured = decide(evaluation(float("nan"), 100.0), None, RULE)
    assert not unmeasured.promote and "not measured" in unmeasured.reason


# one sampling step instead of three makes the tiny generator's FVD clearly worse
TINY_RULE = TINY_PROMOTE_COMPARE


def assert_a_failed_evaluation_keeps_the_last_report(trained, params, monkeypatch) -> None:
    import components.evaluation.stage as evaluation_stage
    from components.config import load_params

    out = trained / "reports/evaluate"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    made = []

    def dies_on_the_second_protocol(*args, **kwargs):
        made.append(args)
        if len(made) == 2:
            raise RuntimeError("killed halfway")
        return protocol_rows(*args, **kwargs)

    monkeypatch.setattr(evaluation_stage, "protocol_rows", dies_on_the_second_protocol)
    with chdir(trained), pytest.raises(RuntimeError, match="killed halfway"):
        evaluation_stage.evaluate(load_params(params).evaluate)
    monkeypatch.undo()
    assert len(made) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_evaluate_then_promote_a_champion_and_keep_a_worse_challenger(trained, prefect_harness,
                                                                     monkeypatch):
    params = with_params(trained, "evaluation.yaml",
                         lambda p: p["promote"].update(compare=TINY_RULE))
    svp(trained, "assemble", params=params)
    svp(trained, "evaluate", params=params)
    out = trained / "reports/evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    for protocol in ("reconstruction", "style_transfer"):
        assert set(metrics[protocol]) == {*ROWS, "real"}
        for row in ROWS:
            assert set(metrics[protocol][row]) == METRICS
            assert all(metrics[protocol][row][m] is not None
                       for m in ("psnr", "ssim", "fid", "fvd", "sync_c", "sync_d"))
        assert set(metrics[protocol]["real"]) == CASE_METRICS
        assert metrics[protocol]["real"]["csim"] > 0.5  # dlib reads the real faces
    assert metrics["reconstruction"]["full"]["fid"] > 0 and metrics["cases"] == {
        "reconstruction": 2, "style_transfer": 2}
    assert set(metrics["style_transfer_by_emotion"]) == {"happy", "sad"}
    assert len(metrics["checks"]) == 8  # 6 landmark checks, Sync-C full vs other speech x 2
    # the ablation rows are sampled with the fast sampler (evaluate.ablation_sampler) and
    # compared with the full model sampled the same way
    assert {c["row"] for c in metrics["checks"].values()} == {"fast"}
    # the fast sampler's row against the paper sampler's, metric by metric
    for protocol in ("reconstruction", "style_transfer"):
        compared = metrics["fast_vs_paper"][protocol]
        assert set(compared) == {"m_lmd", "f_lmd", "fid", "fvd", "psnr", "sync_c", "csim"}
        for metric, c in compared.items():
            assert c["paper"] == metrics[protocol]["full"][metric]
            assert c["fast"] == metrics[protocol]["fast"][metric]
            # a metric that could not be measured (no face found) is not within
            assert c["within"] == (c["worse"] is not None and c["worse"] <= 0.05)
        for metric in ("fid", "fvd"):  # set-level: the s.e. of a paired bootstrap over cases
            assert compared[metric]["se"] is not None and compared[metric]["se"] > 0
    assert metrics["sampling"]["fast"]["solver"] == "dpmsolver++"
    separation = metrics["identity_network"]  # dlib's network on the real held-out faces
    assert separation["faces"] > 0  # the tiny test split has one identity: no AUC to take
    long = metrics["long_video"]  # 3 segments of 16 frames, one call of the fast sampler
    assert long["frames"] == 48 and long["sampler"] == "fast" and len(long["segments"]) == 3
    assert [s["start_s"] for s in long["segments"]] == [0.0, 0.64, 1.28]
    assert all(s["sync_c"] is not None for s in long["segments"] + long["real"]["segments"])
    assert long["real"]["segments"][0]["csim"] > 0.5  # the real frames against their reference
    assert long["csim_slope_per_min"] is None or np.isfinite(long["csim_slope_per_min"])
    assert (out / "long_video.csv").read_text().count("\n") == 4
    assert all((out / name).stat().st_size > 1000
               for name in ("long_video.png", "long_video_frames.png"))
    page = (out / "report.html").read_text()
    assert "Table 1" in page and "Table 2" in page and "<video" in page
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert all(v.with_suffix(".png").stat().st_size > 1000 for v in videos)  # posters
    assert (out / "rows.csv").read_text().count("\n") == 1 + 2 * (len(ROWS) + 1)
    assert "Sync-C" in page and "real clips (ceiling)" in page
    assert "SVP, fast sampler" in page and "The fast sampler against the paper's" in page
    assert 'src="long_video.png"' in page and "Drift per minute" in page
    assert_a_failed_evaluation_keeps_the_last_report(trained, params, monkeypatch)

    dry = svp(trained, "promote", "--dry-run", params=params)
    assert "dry run: would become champion: no champion yet" in dry.stdout
    client = MlflowClient(f"sqlite:///{trained / '.svp/mlflow.db'}")
    assert not client.search_model_versions("name='svp-generator'")
    assert not (trained / "reports/promote/decision.json").exists()

    svp(trained, "promote", params=params)
    decision = json.loads((trained / "reports/promote/decision.json").read_text())
    assert decision["promoted"] and decision["champion_version"] == "1"
    assert decision["evaluation_set"] == metrics["evaluation_set"] and decision["git_commit"]
    champion = client.get_model_version_by_alias("svp-generator", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["svp.part.denoiser.version"].startswith("models:/svp-denoiser-stage3/")
    assert champion.tags["svp.part.vae.version"].startswith("models:/svp-vae/")
    assert json.loads(champion.tags["svp.evaluation"])["evaluation_set"] == \
        metrics["evaluation_set"]
    # what evaluate measured is what was registered, byte for byte, and what generate loads
    with chdir(trained):
        registered = generator_folder("models:/svp-generator@champion")
    assert metrics["generator"]["digest"] == folder_hash(trained / "data/generator") == \
        folder_hash(registered)
    svp(trained, "promote", params=params)  # a retried promote: no second version
    assert len(client.search_model_versions("name='svp-generator'")) == 1
    assert json.loads((trained / "reports/promote/decision.json").read_text())["promoted"]

    # svp generate now uses the champion by default
    identity = sorted(p for p in (trained / "mead").iterdir() if p.is_dir())[0]
    frames, _ = decode_video(identity / "video/front/happy/level_3/001.mp4")
    cv2.imwrite(str(trained / "portrait.png"), frames[0][..., ::-1])
    made = svp(trained, "generate", "--image", str(trained / "portrait.png"), "--audio",
               str(identity / "audio/sad/level_3/001.wav"), "--out", str(trained / "talk.mp4"),
               params=params)
    assert "wrote" in made.stdout and (trained / "talk.mp4").stat().st_size > 1000
    assert "model: generator models:/svp-generator@champion" in made.stderr
    # a params edit after promotion does not change what the champion generates
    edited = with_params(trained, "edited.yaml", lambda p: p["diffusion"]["sampling"].update(
        steps=1, guidance=5.0))
    again = svp(trained, "generate", "--image", str(trained / "portrait.png"), "--audio",
                str(identity / "audio/sad/level_3/001.wav"), "--out",
                str(trained / "talk_again.mp4"), params=edited)
    assert "the generator's own" in again.stdout
    assert (trained / "talk_again.mp4").read_bytes() == (trained / "talk.mp4").read_bytes()

    def one_step(p):  # a worse generator: one denoising step
        p["promote"].update(compare=TINY_RULE)
        p["diffusion"]["sampling"]["steps"] = 1
        p["generator"]["out_dir"] = "data/generator_1step"
        p["evaluate"].update(generator="data/generator_1step", report_videos=0)

    worse = with_params(trained, "worse.yaml", one_step)
    svp(trained, "assemble", params=worse)
    svp(trained, "evaluate", params=worse)
    svp(trained, "promote", params=worse)
    decision = json.loads((trained / "reports/promote/decision.json").read_text())
    assert not decision["promoted"] and decision["challenger_version"] == "2"
    # refused by either half of the rule: a metric worse beyond max_regression, or no mean gain
    # (how much worse one step is on a tiny model depends on the CPU's arithmetic: bf16 or not)
    assert re.search(r"worse than the champion|mean gain -[\d.]+% does not exceed",
                     decision["reason"])
    assert np.mean([c["relative_gain"] for c in decision["compared"].values()]) < 0
    assert str(client.get_model_version_by_alias("svp-generator", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("svp-generator", "challenger").version) == "2"
    assert client.get_model_version("svp-generator", "2").tags["svp.decision"] == "challenger"

    from flows.promote import svp_promote  # the same decision as a Prefect flow run

    before = (trained / "reports/promote/decision.json").read_text()
    record = svp_promote(root=str(trained), dry_run=True)
    assert record["dry_run"] and not record["promoted"] and record["challenger_version"] is None
    assert len(client.search_model_versions("name='svp-generator'")) == 2
    assert (trained / "reports/promote/decision.json").read_text() == before


def test_a_champion_evaluated_on_another_set_is_evaluated_again_on_this_one(monkeypatch):
    import components.evaluation.stage as evaluation_stage
    import components.promotion.stage as promotion_stage
    from components.config import load_params

    row = {"m_lmd": 1.0, "f_lmd": 1.0, "fid": 1.0, "fvd": 1.0}
    measured = {"evaluation_set": "new", "reconstruction": {"full": row},
                "style_transfer": {"full": row}}
    seen = {}

    def evaluate(cfg, log_run):
        seen["cfg"], seen["log_run"] = cfg, log_run
        return measured

    monkeypatch.setattr(promotion_stage, "generator_folder", lambda uri: f"{uri}/generator")
    monkeypatch.setattr(evaluation_stage, "evaluate", evaluate)
    class Client:  # the champion's version tags
        def set_model_version_tag(self, name, version, key, value):
            held.tags[key] = value

    held = SimpleNamespace(name="svp-generator", version=3, tags={
        "svp.evaluation": json.dumps({"evaluation_set": "old"})})
    dry = promotion_stage._champion_metrics(Client(), held, {"evaluation_set": "new"},
                                            load_params(), dry_run=True)
    assert dry == measured and set(held.tags) == {"svp.evaluation"}  # a dry run keeps nothing
    assert seen["log_run"] is False  # and logs no MLflow run
    again = promotion_stage._champion_metrics(Client(), held, {"evaluation_set": "new"},
                                              load_params(), dry_run=False)
    assert again["evaluation_set"] == "new" and again["reconstruction"]["full"] == row
    assert seen["cfg"].generator == "models:/svp-generator/3/generator"
    assert seen["cfg"].latents_dir == load_params().evaluate.latents_dir  # this held-out set
    assert json.loads(held.tags["svp.evaluation.new"]) == measured
    seen.clear()
    reused = promotion_stage._champion_metrics(Client(), held, {"evaluation_set": "new"},
                                               load_params(), dry_run=False)
    assert reused == measured and not seen  # measured on this set once: not again
    kept = promotion_stage._champion_metrics(
        Client(), SimpleNamespace(name="svp-generator", version=3,
                                  tags={"svp.evaluation": json.dumps(measured)}),
        {"evaluation_set": "new"}, load_params(), dry_run=False)
    assert kept == measured and not seen  # the same set: its own numbers, no new evaluation
