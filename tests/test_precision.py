"""`bf16: auto|on|off`: how a setting resolves on this machine, and how params.yaml reads it."""

from __future__ import annotations

import pytest
import torch
import yaml

from components.config import EvaluateConfig
from components.errors import SvpError
from components.precision import bf16_units, use_bf16

CPU = torch.device("cpu")


def test_on_and_off_are_obeyed_and_auto_follows_the_cpu(caplog):
    caplog.set_level("INFO")
    assert use_bf16("on", CPU, "x") and not use_bf16("off", CPU, "x")
    assert use_bf16("auto", CPU, "here") == (bf16_units(CPU) is not None)
    assert "here: bf16 autocast" in caplog.text  # the log says what ran, and why


@pytest.mark.parametrize(("written", "read"), [("on", "on"), ("off", "off"), ("auto", "auto"),
                                               ("true", "on"), ("false", "off")])
def test_yaml_switches_read_as_the_setting(written, read):
    assert EvaluateConfig(**yaml.safe_load(f"bf16: {written}")).bf16 == read


def test_another_value_is_one_line_naming_the_key(tmp_path):
    from components.config import load_params

    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  bf16: fast\n")
    with pytest.raises(SvpError, match=r"generate\.bf16"):
        load_params(params)
