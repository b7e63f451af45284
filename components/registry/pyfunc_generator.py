"""`svp-generator` as an MLflow pyfunc, logged from code: what `svp generate` does, over HTTP
with `mlflow models serve`.

A request is one record (or several) with `image` and `audio` as base64 bytes, and optionally
`style` (a style file's or a style video's bytes) or `style_preset` (the name of one of the
generator's presets), `seed`, `quality` ("fast" or "paper"), `steps`, `guidance` and
`style_mean`; the answer per record is
`video`: the mp4's bytes in base64. Requests carry bytes:
a value naming a file on the server is read only when the operator sets `SVP_SERVE_FILES` to a
folder and the file lies inside it (off by default), so a client cannot make the server read
its files. The artifact is the generator folder itself; nothing is unpickled when it loads.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from components.errors import SvpError
from components.generation.assemble import load_generator
from components.generation.generate import Request, generate
from components.registry.generator import ARTIFACT

STYLE_FILE_MAGIC = b"{"  # a safetensors header (after its 8-byte length) starts with "{"
FILES_VARIABLE = "SVP_SERVE_FILES"


def served_file(value: str) -> str | None:
    """`value` as a server path, if the operator allows paths and it lies in their folder."""
    allowed = os.environ.get(FILES_VARIABLE)
    if not allowed or len(value) > 4096 or "\n" in value:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = Path(allowed) / path
    path, root = path.resolve(), Path(allowed).resolve()
    return str(path) if path.is_relative_to(root) and path.is_file() else None


def materialise(value: str, folder: Path, name: str) -> str:
    """Base64 bytes written to `folder/name` (or an allowed server path, `served_file`)."""
    if (path := served_file(value)) is not None:
        return path
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SvpError(f"{name}: not base64 bytes (requests carry the file's bytes; server "
                       f"paths only under {FILES_VARIABLE}, when the operator sets it)") from None
    path = folder / name
    if name == "style" and data[8:9] == STYLE_FILE_MAGIC:
        path = path.with_suffix(".safetensors")
    path.write_bytes(data)
    return str(path)


def _optional(record: dict, key: str, kind: type):
    """A record's value, None where absent (a data frame fills a missing value with NaN)."""
    value = record.get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else kind(value)


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.pipeline = load_generator(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        records = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) \
            else [model_input] if isinstance(model_input, dict) else list(model_input)
        return pd.DataFrame({"video": [self._one(r) for r in records]})

    def _one(self, record: dict) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            image = materialise(record["image"], folder, "image")
            audio = materialise(record["audio"], folder, "audio")
            style = record.get("style")
            style_files, style_videos = (), ()
            if style:
                style = materialise(style, folder, "style")
                style_files, style_videos = ((style,), ()) if style.endswith(".safetensors") \
                    else ((), (style,))
            out = folder / "out.mp4"
            preset = record.get("style_preset")
            request = Request(image, audio, str(out), style_videos, style_files,
                              (str(preset),) if isinstance(preset, str) and preset else (),
                              style_mean=bool(record.get("style_mean", False)),
                              seed=_optional(record, "seed", int) or 0,
                              steps=_optional(record, "steps", int),
                              guidance=_optional(record, "guidance", float),
                              quality=_optional(record, "quality", str))
            generate(self.pipeline, request)
            return base64.b64encode(out.read_bytes()).decode()


mlflow.models.set_model(GeneratorModel())
