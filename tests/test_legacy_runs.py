"""Run directories written by vaekit 0.1 (``tests/fixtures/runs-0.1``) still load, report the
numbers vaekit 0.1 reported on them, and resume; and this version, trained the same way,
writes the same checkpoints bit for bit (the redesign changed no gradient and no random
stream), except for the VQ-VAE's last checkpoint, which now carries its code prior."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from vaekit.cli import main
from vaekit.io import load_tensors
from vaekit.runs import evaluate_run, load_run
from vaekit.sampling import prior_samples
from vaekit.training import LAST

FIXTURES = Path(__file__).parent / "fixtures" / "runs-0.1"
sys.path.insert(0, str(FIXTURES))
import make_fixtures  # noqa: E402  (the cases and flags the fixtures were made with)

EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CASES = list(make_fixtures.CASES)


@pytest.fixture
def old_run(tiny_npz, tmp_path):
    """A copy of a fixture run whose dataset placeholder points at the tiny npz."""
    def copy(name: str) -> Path:
        path = tmp_path / "old" / name
        shutil.copytree(FIXTURES / name, path)
        cfg = json.loads((path / "config.json").read_text())
        if cfg["data"]["dataset"] == make_fixtures.PLACEHOLDER:
            cfg["data"]["dataset"] = str(tiny_npz)
        (path / "config.json").write_text(json.dumps(cfg))
        return path
    return copy


def _close(got: dict, want: dict, what: str) -> None:
    for k, v in want.items():
        if k == "num_samples" and got[k] is None:
            continue     # 0.1 echoed the k asked for where nothing is sampled (autoencoders)
        assert k in got, f"{what}: {k} missing"
        if isinstance(v, float) and not isinstance(got[k], bool):
            assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-6), f"{what}: {k}"
        else:
            assert got[k] == v, f"{what}: {k}"


@pytest.mark.parametrize("name", CASES)
def test_a_run_of_vaekit_0_1_loads_and_reports_the_same_numbers(name, old_run):
    path = old_run(name)
    for checkpoint in ("best", "last"):
        key = name if checkpoint == "best" else f"{name}@last"
        if key in EXPECTED:
            got = evaluate_run(load_run(path, checkpoint=checkpoint), 20, save=False).to_dict()
            _close(got, EXPECTED[key], key)
    if f"{name}@samples" in EXPECTED:
        want = torch.tensor(EXPECTED[f"{name}@samples"])
        got = prior_samples(load_run(path).model, 4).reshape(want.shape)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _param_order(meta_new: dict) -> list[str]:
    """vaekit 0.1's optimizer order: a learned Gaussian sigma was the model's first
    parameter."""
    names, first = meta_new["param_names"], "model.observation.log_std"
    return [first] + [n for n in names if n != first] if first in names else names


def _same_to_rounding(new: torch.Tensor, old: torch.Tensor, what: str) -> None:
    """The same training to float32 rounding. The fixtures were written on another CPU: its
    kernels round differently (measured on an AMD EPYC with AVX-512: 1 unit in the last
    place after 2 epochs; EM, whose steps are batched products since 0.2, 1 to 3), so bit
    identity is only asked of runs on one machine (tests/test_resume.py). A changed
    computation moves the weights by orders of magnitude more."""
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6,
                               msg=lambda m: f"{what}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_training_as_vaekit_0_1_did_writes_the_same_checkpoints(name, old_run, tiny_npz,
                                                                tmp_path):
    uses_npz, flags = make_fixtures.CASES[name]
    old = old_run(name)
    new = tmp_path / "new"
    argv = ["train", *(["--data", str(tiny_npz)] if uses_npz else []), "--out", str(new),
            *make_fixtures.COMMON, *flags, "--no-eval"]
    assert main(argv) == 0
    for file in ("best", "last"):
        if not (old / f"{file}.safetensors").is_file():
            continue
        a = load_run(old, checkpoint=file).model.state_dict()
        b = load_run(new, checkpoint=file).model.state_dict()
        assert sorted(a) == sorted(b)
        prior = name == "vqvae" and file == "last"     # 0.1 left it uniform there
        for k in a:
            if prior and k.startswith("code_prior."):
                assert not torch.equal(a[k], b[k])
                continue
            _same_to_rounding(b[k], a[k], f"{file}: {k}")
    if (old / LAST).is_file():
        ta, _ = load_tensors(old / LAST)
        tb, mb = load_tensors(new / LAST)
        names_a, names_b = _param_order(mb), mb["param_names"]
        opt = [k for k in ta if k.startswith("optimizer.")]
        assert opt
        for k in opt:
            _, pid, st = k.split(".", 2)
            _same_to_rounding(tb[f"optimizer.{names_b.index(names_a[int(pid)])}.{st}"], ta[k], k)
        assert torch.equal(ta["rng.cpu"], tb["rng.cpu"])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CASES if (FIXTURES / n / LAST).is_file()])
def test_a_run_of_vaekit_0_1_resumes_where_it_stopped(name, old_run, tiny_npz, tmp_path):
    """Resumed for two more epochs, a 0.1 run ends where this version's run of that many
    epochs ends (the optimizer state is matched to the parameters by their 0.1 order, the
    schedule rebuilt from the epoch)."""
    uses_npz, flags = make_fixtures.CASES[name]
    old = old_run(name)
    done = json.loads((old / "config.json").read_text())["train"]["epochs"]
    more = str(done + 2)
    assert main(["train", "--resume", str(old), "--epochs", more, "--no-eval",
                 "--no-progress"]) == 0
    new = tmp_path / "new"
    argv = ["train", *(["--data", str(tiny_npz)] if uses_npz else []), "--out", str(new),
            *make_fixtures.COMMON, *flags, "--epochs", more, "--no-eval"]
    assert main(argv) == 0
    a = load_run(old, checkpoint="last").model.state_dict()
    b = load_run(new, checkpoint="last").model.state_dict()
    for k in a:
        _same_to_rounding(b[k], a[k], k)
