"""docs/architecture.md stays true: its complete examples (a model family and an estimator,
each one module) run, and what they register works through the command line."""

from __future__ import annotations

import json
import re

from conftest import REPO

from vaekit.cli import main
from vaekit.estimators import ESTIMATORS
from vaekit.families import FAMILIES

DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_the_examples_of_adding_a_family_and_an_estimator_run(tiny_npz, tmp_path, capsys):
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC, flags=re.S) if "..." not in b]
    assert len(blocks) == 2
    try:
        for block in blocks:
            exec(compile(block, "architecture.md", "exec"), {})
        assert "linear-vae" in FAMILIES and "power-iwae" in ESTIMATORS
        out = tmp_path / "run"
        code = main(["train", "--model", "linear-vae", "--latent-dim", "4", "--objective",
                     "power-iwae", "--alpha", "0.3", "--num-samples", "4", "--data",
                     str(tiny_npz), "--out", str(out), "--epochs", "2", "--batch-size", "32",
                     "--eval-num-samples", "20", "--no-progress"])
        assert code == 0, capsys.readouterr().err
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["train"]["alpha"] == 0.3 and cfg["model"]["model"] == "linear-vae"
        assert json.loads((out / "eval.json").read_text())["log_likelihood"] < 0
    finally:
        FAMILIES.unregister("linear-vae")
        ESTIMATORS.unregister("power-iwae")
