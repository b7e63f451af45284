"""`svp-generator` as an MLflow pyfunc, logged from code: what `svp generate` does, over HTTP
with `mlflow models serve`.

A request is one record (or several) with `image` and `audio`, each a path readable by the
server or base64 bytes, and optionally `style` (a style file's or a style video's bytes or
path), `seed`, `steps`, `guidance` and `style_mean`; the answer per record is `video`: the mp4's
bytes in base64. The artifacts are the parts' `save_pretrained` folders, the features stage's
settings and basis, and `generator.json` (the diffusion and generate params); nothing is
unpickled when the model loads.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from components.config import DiffusionConfig, GenerateConfig, Params
from components.errors import SvpError
from components.generation.generate import Request, generate
from components.generation.models import load_generator

STYLE_FILE_MAGIC = b"{"  # a safetensors header (after its 8-byte length) starts with "{"


def _materialise(value: str, folder: Path, name: str) -> str:
    """A path as it is, or base64 bytes written to `folder/name`."""
    if len(value) < 4096 and Path(value).is_file():
        return value
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SvpError(f"{name}: neither a readable path nor base64 bytes") from None
    path = folder / name
    if name == "style" and data[8:9] == STYLE_FILE_MAGIC:
        path = path.with_suffix(".safetensors")
    path.write_bytes(data)
    return str(path)


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        a = context.artifacts
        saved = json.loads(Path(a["generator"]).read_text())
        generate_cfg = GenerateConfig(**saved["generate"] | {
            "model": None, "denoiser": a["denoiser"], "vae": a["vae"], "style_model": a["style"],
            "features_dir": a["features"]})
        self.params = Params(diffusion=DiffusionConfig(**saved["diffusion"]),
                             generate=generate_cfg)
        self.generator = load_generator(generate_cfg, self.params.diffusion)

    def predict(self, context, model_input, params=None):
        records = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) \
            else [model_input] if isinstance(model_input, dict) else list(model_input)
        return pd.DataFrame({"video": [self._one(r) for r in records]})

    def _one(self, record: dict) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            image = _materialise(record["image"], folder, "image")
            audio = _materialise(record["audio"], folder, "audio")
            style = record.get("style")
            style_files, style_videos = (), ()
            if style:
                style = _materialise(style, folder, "style")
                style_files, style_videos = ((style,), ()) if style.endswith(".safetensors") \
                    else ((), (style,))
            out = folder / "out.mp4"
            request = Request(image, audio, str(out), style_videos, style_files,
                              style_mean=bool(record.get("style_mean", False)),
                              seed=int(record.get("seed", 0)),
                              steps=record.get("steps") and int(record["steps"]),
                              guidance=record.get("guidance") and float(record["guidance"]))
            generate(self.params, request, self.generator)
            return base64.b64encode(out.read_bytes()).decode()


mlflow.models.set_model(GeneratorModel())
