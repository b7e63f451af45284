"""Shared fixtures: a tiny generated dataset (real mp4/wav files) and helpers for media."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from components.config import SynthConfig
from components.runtime import apply_offline_defaults
from components.synth.generate import synthesize_dataset

apply_offline_defaults()

TINY = SynthConfig(n_identities=3, emotions=["happy", "neutral", "sad"], levels=[3],
                   n_sentences=1, resolution=128, workers=2)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 9-clip MEAD-shaped tree (3 identities x neutral/happy/sad). Treat as read-only."""
    root = tmp_path_factory.mktemp("synth") / "mead"
    synthesize_dataset(TINY, root)
    return root


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for flow runs and deployments (no network, no server to run)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def isolated_mlflow_uri():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; keep it from leaking between tests
    (and into the subprocesses later tests start)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
