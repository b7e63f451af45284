"""dvc.yaml's `deps` cover the code each stage runs, derived from the code itself: the CLI
function of the stage's command, and every project module it imports, at any depth."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import typer
import yaml

from components.code_deps import import_closure, undeclared_code
from flows.cli import app

ROOT = Path(__file__).resolve().parents[1]


def command_modules(cmd: str) -> list[str]:
    """The project modules the CLI function behind `cmd` (`svp data features`) imports."""
    words = cmd.split()
    assert words[0] == "svp", cmd
    command = typer.main.get_command(app)
    for word in words[1:]:
        if word.startswith("-"):
            break
        command = command.commands[word]
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(command.callback)))
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("components"):
            modules += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules += [a.name for a in node.names if a.name.startswith("components")]
    return modules


def undeclared(pipeline: dict) -> dict[str, list[str]]:
    missing = {}
    for name, stage in pipeline["stages"].items():
        code = import_closure(command_modules(stage["cmd"]), ROOT)
        deps = [d for d in stage.get("deps", []) if "${" not in d]
        if gaps := undeclared_code(deps, code):
            missing[name] = gaps
    return missing


def test_every_stage_declares_the_code_it_runs():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert undeclared(pipeline) == {}


def test_the_check_fails_when_a_module_is_left_out():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in pipeline["stages"].items():
        code = sorted(import_closure(command_modules(stage["cmd"]), ROOT))
        assert code, f"stage {name}: its command imports no project code"
        leave_out = code[-1].as_posix()
        stage["deps"] = [d for d in stage["deps"] if d != leave_out
                         and not leave_out.startswith(d.rstrip("/") + "/")]
        assert leave_out in undeclared(pipeline)[name]


def test_the_closure_follows_imports_inside_functions():
    files = {p.as_posix() for p in import_closure(["components.style.stage"], ROOT)}
    assert "components/training/ray_fit.py" in files  # imported at module level
    assert "components/runtime.py" in files  # imported inside tracking's functions
    assert "components/__init__.py" in files
    assert not any(f.startswith("components/synth/") for f in files)


def test_real_data_features_do_not_need_the_synthetic_generator():
    files = {p.as_posix() for p in import_closure(command_modules("svp data features"), ROOT)}
    assert not any(f.startswith("components/synth/") for f in files)
