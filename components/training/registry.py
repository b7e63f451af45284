"""Trained models in the MLflow registry, with nothing pickled on either side.

A model is logged as an MLflow pyfunc *from code*: the pyfunc class lives in a project file
(`code`) that MLflow imports on load, and the weights travel as a plain artifact folder written
by diffusers' `save_pretrained` (`config.json` + safetensors). `load_registered` reads that
folder back with `from_pretrained(use_safetensors=True)`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diffusers.models.modeling_utils import ModelMixin

from components.media import content_hash
from components.runtime import download_registered
from components.tracking import StageRun

WEIGHTS_ARTIFACT = "model"  # the key of the weights folder among the pyfunc's artifacts
WEIGHTS_TAG = "svp.weights"  # each version's weights digest: how a folder finds its version


def weights_digest(folder: str | Path) -> str | None:
    """sha256 (16 hex digits) of a `save_pretrained` folder's safetensors files, or None."""
    files = sorted(Path(folder).glob("*.safetensors"))
    return content_hash(*files)[:16] if files else None


def save_pretrained(model: ModelMixin, folder: str | Path) -> Path:
    """`model.save_pretrained(folder)`, complete or absent: written beside it, then renamed."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def register_model(run: StageRun, model_dir: str | Path, name: str, code: str | Path,
                   signature, pip_requirements: list[str]) -> str:
    """Log `model_dir` under `run` as a models-from-code pyfunc and register it as `name`;
    returns the version. A run registers one version per name: a rerun of a stage whose run
    already registered (a retry after a lost server) gets that version back, not a second."""
    import mlflow

    earlier = run.client().search_model_versions(f"name='{name}' and run_id='{run.run_id}'")
    if earlier:
        version = str(min(int(v.version) for v in earlier))
    else:
        with run.active():
            info = mlflow.pyfunc.log_model(
                name=name.replace("-", "_"), python_model=str(code),
                artifacts={WEIGHTS_ARTIFACT: str(model_dir)}, signature=signature,
                registered_model_name=name, pip_requirements=pip_requirements)
        version = str(info.registered_model_version)
    digest = weights_digest(model_dir)
    if digest:
        run.client().set_model_version_tag(name, version, WEIGHTS_TAG, digest)
    return version


def registered_version_of(folder: str | Path, tracking_uri: str) -> str | None:
    """`models:/<name>/<version>` of the registered model whose weights are `folder`'s, if any
    (the newest such version)."""
    import mlflow

    digest = weights_digest(folder)
    if digest is None:
        return None
    found = mlflow.MlflowClient(tracking_uri).search_model_versions(
        f"tags.`{WEIGHTS_TAG}` = '{digest}'")
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return f"models:/{newest.name}/{newest.version}"


def local_model_folder(source: str | Path) -> Path:
    """A `save_pretrained` folder: `source` itself, or a registered version's weights folder."""
    if not str(source).startswith("models:/"):
        return Path(source)
    root = download_registered(str(source))
    (config,) = (root / "artifacts").glob("*/config.json")
    return config.parent


def load_registered(model_uri: str, model_class: type[ModelMixin]) -> ModelMixin:
    """`models:/<name>/<version>` or `models:/<name>@<alias>` as a `model_class`, in eval mode."""
    return load_pretrained(model_class, local_model_folder(model_uri))


def load_pretrained(model_class: type[ModelMixin], folder: str | Path) -> ModelMixin:
    """A `save_pretrained` folder back as `model_class` (safetensors only), in eval mode."""
    return model_class.from_pretrained(str(folder), use_safetensors=True,
                                       low_cpu_mem_usage=False).eval()


def load_model_from(source: str | Path, model_class: type[ModelMixin]) -> ModelMixin:
    """A `save_pretrained` folder, or a registry URI (`models:/<name>/<version>`, `@<alias>`)."""
    from components.errors import SvpError

    if str(source).startswith("models:/"):
        try:
            return load_registered(str(source), model_class)
        except Exception as err:
            raise SvpError(f"{source}: cannot load this registered model "
                           f"({' '.join(str(err).split())[:160]})") from None
    if not (Path(source) / "config.json").is_file():
        raise SvpError(f"{source}: no saved model here (expected config.json and safetensors)")
    return load_pretrained(model_class, source)
