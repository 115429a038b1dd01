"""README.md stays true: CI runs its test command, and its Python example runs."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks("bash") if "pytest" in b]
    assert len(commands) == 1
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[0] in ci.splitlines()


def test_readme_main_command_trains_the_default():
    assert any(b.strip().endswith("&& vaekit train") for b in _blocks("bash"))


@pytest.mark.slow
def test_readme_python_example_runs(capsys):
    (example,) = _blocks("python")
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    value = float(re.search(r"test log-likelihood (-[\d.]+)", out).group(1))
    assert -200 < value < -90          # nats per image; a few epochs on mnist-5k
