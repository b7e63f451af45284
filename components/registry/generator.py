"""`svp-generator` in the MLflow registry: one version is one generator folder (`svp assemble`),
logged byte for byte as the artifact `generator` of a models-from-code pyfunc
(`pyfunc_generator.py`), so that `mlflow models serve` answers generation requests and `svp
generate --model models:/svp-generator@champion` loads exactly what was evaluated.

Registering is idempotent: a version whose `svp.generator` tag holds the folder's digest is
returned instead of logging the same bytes again (a retried `promote` makes no duplicate)."""

from __future__ import annotations

from pathlib import Path

from components.errors import SvpError
from components.media import folder_hash
from components.runtime import download_registered, mlflow_tracking_uri
from components.tracking import open_stage_run

PYFUNC_GENERATOR = Path(__file__).with_name("pyfunc_generator.py")
EXPERIMENT = "svp-generator"
ARTIFACT = "generator"
DIGEST_TAG = "svp.generator"  # the folder's digest (`folder_hash`)
REQUIREMENTS = ["torch==2.13.0", "diffusers", "safetensors", "numpy", "pandas", "opencv-python",
                "dlib-bin", "openai-whisper", "av"]


def registered_generator(client, name: str, digest: str):
    """The newest version of `name` holding the folder with this digest, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{DIGEST_TAG}` = "
                                             f"'{digest}'")
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def register_generator(folder: str | Path, name: str = "svp-generator", root: str | Path = ".",
                       stage: str = "register_generator", digest: str | None = None) -> str:
    """Log and register the generator folder (in a run of `stage`); returns its version.
    `digest`: the folder's `folder_hash`, when the caller has just checked it."""
    import mlflow

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise SvpError(f"{folder}: no generator here (expected model_index.json; make one with "
                       "`svp assemble`)")
    digest = digest or folder_hash(folder)
    client = mlflow.MlflowClient(mlflow_tracking_uri(root))
    existing = registered_generator(client, name, digest)
    if existing is not None:
        return str(existing.version)
    run = open_stage_run(EXPERIMENT, stage, {"generator": str(folder)}, {DIGEST_TAG: digest},
                         root)
    with run.active():
        info = mlflow.pyfunc.log_model(
            name="svp_generator", python_model=str(PYFUNC_GENERATOR),
            artifacts={ARTIFACT: str(folder)}, registered_model_name=name,
            pip_requirements=REQUIREMENTS)
    run.finish()
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, DIGEST_TAG, digest)
    return version


def generator_folder(uri: str) -> Path:
    """The generator folder of a registered `svp-generator` version, downloaded."""
    from mlflow.models import Model

    try:
        root = download_registered(uri)
        artifacts = Model.load(str(root)).flavors["python_function"]["artifacts"]
        return root / artifacts[ARTIFACT]["path"]
    except Exception as err:
        raise SvpError(f"{uri}: cannot load this registered generator "
                       f"({' '.join(str(err).split())[:140]}); run `dvc repro` (its promote "
                       "stage sets the champion) or pass --model a generator folder") from None
