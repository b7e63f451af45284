"""SyncNet: syncnet_python's layout and loader, the Sync-C / Sync-D procedure, and the
`train_syncnet` stage on real synth media (espeak-ng speech, ffmpeg-written clips)."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from components.errors import SvpError
from components.syncnet.model import SyncNet
from components.syncnet.score import MFCC_PER_FRAME, score_windows
from tests.conftest import svp

# syncnet_python's SyncNetModel.S: parameter names and shapes (the convolutions and linears)
SYNCNET_V2_SHAPES = {
    "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.8.weight": (384, 192, 3, 3), "netcnnaud.11.weight": (256, 384, 3, 3),
    "netcnnaud.14.weight": (256, 256, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netfcaud.0.weight": (512, 512), "netfcaud.1.running_mean": (512,),
    "netfcaud.3.weight": (1024, 512),
    "netfclip.0.weight": (512, 512), "netfclip.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.8.weight": (256, 256, 1, 3, 3), "netcnnlip.11.weight": (256, 256, 1, 3, 3),
    "netcnnlip.14.weight": (256, 256, 1, 3, 3), "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netcnnlip.19.num_batches_tracked": (),
}


def syncnet_v2_file(path: Path) -> dict[str, torch.Tensor]:
    """A file shaped like syncnet_python's `syncnet_v2.model`: an OrderedDict state dict of
    every tensor of SyncNetModel.S, random values."""
    generator = torch.Generator().manual_seed(0)
    state = OrderedDict((name, torch.randn(tensor.shape, generator=generator)
                         if tensor.is_floating_point() else tensor.clone())
                        for name, tensor in SyncNet().state_dict().items())
    for name, value in state.items():
        if name.endswith("running_var"):
            state[name] = value.abs() + 0.5
    torch.save(state, path)
    return state


def test_the_default_syncnet_has_syncnet_v2s_names_and_shapes():
    state = SyncNet().state_dict()
    for name, shape in SYNCNET_V2_SHAPES.items():
        assert tuple(state[name].shape) == shape, name
    assert len(state) == 102  # 16 convolutions and linears x 2, 14 batch norms x 5 tensors


def test_syncnet_v2_model_loads_as_tensors_and_scores_224_pixel_faces(tmp_path):
    written = syncnet_v2_file(tmp_path / "syncnet_v2.model")
    model = SyncNet.from_syncnet_python(tmp_path / "syncnet_v2.model")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, written[name])
    faces = np.random.default_rng(0).uniform(0, 255, (12, 3, 224, 224)).astype(np.float32)
    score = score_windows(model, faces, np.random.default_rng(1).normal(
        size=(12 * MFCC_PER_FRAME, 13)).astype(np.float32))
    assert score.distances.shape == (31,) and score.confidence >= 0 and -15 <= score.offset <= 15


class Payload:  # anything whose unpickling would run project code
    pass


def test_a_syncnet_file_that_is_not_syncnet_v2_is_one_line(tmp_path):
    (tmp_path / "code.model").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(SvpError, match=r"code\.model: not a SyncNet state dict"):
        SyncNet.from_syncnet_python(tmp_path / "code.model")
    torch.save({"netcnnaud.0.weight": torch.zeros(3)}, tmp_path / "other.model")
    with pytest.raises(SvpError, match=r"other\.model: not syncnet_python's SyncNet"):
        SyncNet.from_syncnet_python(tmp_path / "other.model")
    with pytest.raises(SvpError, match=r"absent\.model: SyncNet weights not found"):
        SyncNet.from_syncnet_python(tmp_path / "absent.model")


@pytest.fixture(scope="module")
def syncnet_project(project) -> Path:
    """The shared tiny project with a SyncNet trained by `svp train syncnet`."""
    def change(params):
        params["train_syncnet"].update(
            steps=400, batch_size=32, checkpoint_every=200, eval_window=24, face_size=64,
            out_dir="data/syncnet_trained", report_dir="reports/syncnet_trained",
            checkpoint_dir="data/syncnet_trained_checkpoints")

    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    path = project / "params_syncnet.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    run = svp(project, "train", "syncnet", params=path)
    assert "held-out windows" in run.stdout
    return project


def test_train_syncnet_reads_lip_sync_on_held_out_clips(syncnet_project):
    metrics = json.loads((syncnet_project / "reports/syncnet_trained/metrics.json").read_text())
    assert metrics["offset_within_1"] >= 0.8, metrics
    gap = metrics["sync_c"]["gap"]
    assert gap["mean"] > 2 * gap["se"] > 0, metrics
    assert (syncnet_project / "reports/syncnet_trained/offsets.png").stat().st_size > 1000
    mlflow.set_tracking_uri(f"sqlite:///{syncnet_project / '.svp/mlflow.db'}")
    (version,) = mlflow.MlflowClient().search_model_versions("name='svp-syncnet'")
    pyfunc = mlflow.pyfunc.load_model(f"models:/svp-syncnet/{version.version}")
    assert "python_model.pkl" not in {p.name for p in Path(
        mlflow.artifacts.download_artifacts(f"models:/svp-syncnet/{version.version}")).rglob("*")}
    assert pyfunc is not None


def test_sync_c_orders_own_then_shifted_then_other_speech(syncnet_project):
    """On held-out clips cut into the evaluation's short windows (24 frames): their own speech
    scores above the speech 8 frames earlier, which scores above another clip's speech. (The
    +-15-frame search finds a shift, so a shift costs Sync-C only through the face windows it
    leaves without their speech: a third of them here.)"""
    from components.syncnet.data import load_sync_clips
    from components.syncnet.registry import load_syncnet

    model = load_syncnet(syncnet_project / "data/syncnet_trained")
    clips = load_sync_clips(syncnet_project / "data/features", "test", model.config.face_size,
                            model.config.face_region, media_root=syncnet_project)
    frames, shift = 24, 8
    scores: dict[str, list[float]] = {"own": [], "shifted": [], "other": []}
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        for start in range(shift, min(len(clip.faces), len(other.faces)) - frames, frames):
            faces = clip.faces[start:start + frames]

            def speech(source, first: int):
                return source.cepstra[MFCC_PER_FRAME * first:MFCC_PER_FRAME * (first + frames)]

            scores["own"].append(score_windows(model, faces, speech(clip, start)).confidence)
            scores["shifted"].append(
                score_windows(model, faces, speech(clip, start - shift)).confidence)
            scores["other"].append(score_windows(model, faces, speech(other, start)).confidence)
    mean = {k: np.mean(v) for k, v in scores.items()}
    assert len(scores["own"]) >= 6 and mean["own"] > mean["shifted"] > mean["other"], mean
