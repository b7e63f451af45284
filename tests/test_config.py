"""params.yaml: typed, strict, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import Params, load_params
from components.errors import SvpError

PROJECT = Path(__file__).resolve().parents[1]


def test_the_shipped_params_load():
    params = load_params(PROJECT / "params.yaml")
    assert isinstance(params, Params)
    assert params.ingest.split.n_test_identities == 2


@pytest.mark.parametrize(("text", "message"), [
    ("synth: {n_identitis: 3}", "synth.n_identitis: unknown key"),
    ("bogus: {}", "bogus: unknown key"),
    ("ingest: {split: {seed: x}}", "ingest.split.seed: Input should be a valid integer"),
    ("ingest: {layout: zip}", "ingest.layout: Input should be 'auto', 'mead', 'hdtf' or 'folder'"),
    ("validate: {min_fps: 40, max_fps: 30}", "min_fps 40.0 exceeds max_fps 30.0"),
    ("synth: {levels: [4]}", "levels must be among 1, 2, 3"),
    ("- a list", "expected a mapping"),
    ("synth: [unclosed", "not valid YAML"),
])
def test_bad_params_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(SvpError) as err:
        load_params(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(path))


def test_missing_params_file(tmp_path):
    with pytest.raises(SvpError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_the_full_profile_is_params_only():
    """`profiles/full.args` (for `dvc exp run -S`) names existing keys and gives valid params."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    full = load_params(root / "params.yaml", root / "profiles/full.args")
    assert full.diffusion.resolution == 512 and full.diffusion.unet.cross_attention_dim == 768
    assert full.diffusion.style.style_dim == full.train_style.d_model


def test_a_profile_line_that_is_not_a_key(tmp_path):
    from pathlib import Path

    profile = tmp_path / "bad.args"
    profile.write_text("diffusion.resolution=512\ndiffusion.unet.no_such_key=1\n")
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    with pytest.raises(SvpError, match=r"bad.args: diffusion.unet.no_such_key=1: not a key"):
        load_params(params, profile)
