"""Process-wide defaults: telemetry off, offline hubs, and the embedded service endpoints.

Each service has one variable that points it at a real server instead of the embedded default:
`MLFLOW_TRACKING_URI` (default: SQLite under `.svp/` with a local artifact folder),
`PREFECT_API_URL` (default: Prefect's temporary local API) and `RAY_ADDRESS` (default: Ray
Train's local mode, no cluster started).
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "true",  # MLflow ignores "1"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    # The temporary local Prefect API needs 12-15 s to start on 2 cores; 20 s is too tight.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # A tracking server that comes back within ~15 s is waited for (1 + 2 + 4 + 8 s of
    # backoff); one that does not fails the stage then, not after MLflow's default 7 retries
    # (over 4 minutes). `components.services` says which server it was.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

STATE_DIR = ".svp"


def apply_offline_defaults() -> None:
    """Set the telemetry and offline switches unless the user already chose otherwise."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def mlflow_tracking_uri(root: str | Path = ".") -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite database under `<root>/.svp/`."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    db = (Path(root) / STATE_DIR / "mlflow.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"  # absolute path, so four slashes in all


def mlflow_artifact_location(root: str | Path = ".") -> str | None:
    """An absolute local artifact folder for the embedded store; the server's own otherwise."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(root) / STATE_DIR / "mlartifacts").resolve().as_uri()


def download_registered(uri: str, dst_path: str | None = None) -> Path:
    """The files of a `models:/` URI, resolved against this project's registry (mlflow reads
    models:/ URIs through its process-wide tracking URI, which `set_tracking_uri` also exports
    as a variable: both are restored afterwards)."""
    import mlflow

    before_env, before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_tracking_uri())
    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=dst_path))
    finally:
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env
