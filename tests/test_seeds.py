"""``vaekit train --seeds``: each seed's run is the run ``--seed S`` trains alone, the
statistics over seeds are the sample mean and standard deviation of the per-seed values, an
interrupted group resumes, and ``vaekit compare`` groups runs that differ only in the seed."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
import torch
from conftest import TINY, run_cli

from vaekit.errors import ConfigError
from vaekit.io import load_tensors
from vaekit.seeds import SEEDS, over_seeds, parse_seeds
from vaekit.training import LAST


def _tensors(run_dir):
    return load_tensors(run_dir / LAST)[0]


def _assert_same_run(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    ea = json.loads((a / "eval.json").read_text())
    eb = json.loads((b / "eval.json").read_text())
    assert ea["log_likelihood"] == eb["log_likelihood"]


@pytest.fixture
def group(tiny_npz, tmp_path, capsys):
    out = tmp_path / "group"
    code, stdout, err = run_cli(capsys, "train", "--data", tiny_npz, "--seeds", "3,5",
                                "--out", out, *TINY)
    assert code == 0, err
    return out, stdout


def test_each_seed_is_the_run_that_seed_trains_alone(group, tiny_npz, tmp_path, capsys):
    out, stdout = group
    alone = tmp_path / "alone"
    code, _, err = run_cli(capsys, "train", "--data", tiny_npz, "--seed", "5", "--out", alone,
                           *TINY)
    assert code == 0, err
    _assert_same_run(out / "seed-5", alone)
    a3, a5 = _tensors(out / "seed-3"), _tensors(out / "seed-5")
    assert not torch.equal(a3["model.decoder_net.0.bias"], a5["model.decoder_net.0.bias"])
    assert json.loads((out / "seed-3" / "config.json").read_text())["train"]["seed"] == 3
    assert "over 2 seeds, test log-likelihood: mean" in stdout


def test_seeds_json_holds_the_mean_and_sample_sd_of_the_per_seed_values(group):
    out, _ = group
    record = json.loads((out / SEEDS).read_text())
    assert record["seeds"] == [3, 5] and [r["name"] for r in record["runs"]] == \
        ["seed-3", "seed-5"]
    values = [json.loads((out / f"seed-{s}" / "eval.json").read_text())["log_likelihood"]
              for s in (3, 5)]
    ses = [json.loads((out / f"seed-{s}" / "eval.json").read_text())["log_likelihood_se"]
           for s in (3, 5)]
    st = record["over_seeds"]["test_log_likelihood"]
    assert st["n"] == 2
    assert st["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert st["sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert st["mean_se"] == pytest.approx(statistics.fmean(ses), abs=1e-12)


def test_over_seeds_groups_only_runs_that_differ_in_the_seed():
    rows = [{"name": f"r{i}", "seed": i, "config_key": key, "test_log_likelihood": v,
             "test_log_likelihood_se": 0.5, "test_elbo": None}
            for i, (key, v) in enumerate([("a", -90.0), ("a", -91.0), ("a", -95.0),
                                          ("b", -80.0)])]
    (g,) = over_seeds(rows)
    assert g["runs"] == ["r0", "r1", "r2"] and g["test_elbo"] is None
    assert g["test_log_likelihood"]["mean"] == pytest.approx(-92.0)
    assert g["test_log_likelihood"]["sd"] == pytest.approx(statistics.stdev([-90, -91, -95]))


def test_an_interrupted_group_resumes_every_seed(tiny_npz, tmp_path, capsys):
    """Seed 3 stopped after 1 of 2 epochs, seed 5 never started: --resume trains both to the
    runs an uninterrupted group writes."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    args = ["--data", tiny_npz, "--seeds", "3,5", *TINY]
    assert run_cli(capsys, "train", *args, "--out", whole)[0] == 0
    one_epoch = list(args)
    one_epoch[one_epoch.index("--epochs") + 1] = "1"
    assert run_cli(capsys, "train", *one_epoch, "--out", part)[0] == 0
    shutil.rmtree(part / "seed-5")
    code, stdout, err = run_cli(capsys, "train", "--resume", part, "--epochs", "2",
                                "--no-progress")
    assert code == 0, err
    assert "resuming" in err and "starting" in err
    for s in (3, 5):
        _assert_same_run(whole / f"seed-{s}", part / f"seed-{s}")
    assert json.loads((part / SEEDS).read_text())["over_seeds"] == \
        json.loads((whole / SEEDS).read_text())["over_seeds"]


def test_compare_reports_the_spread_over_seeds(group, tmp_path, capsys):
    out, _ = group
    code, stdout, err = run_cli(capsys, "compare", out / "seed-3", out / "seed-5", "--out",
                                tmp_path / "cmp", "--num-samples", "20", "--no-progress")
    assert code == 0, err
    assert "over seeds 3, 5 (seed-3, seed-5): log-lik. mean" in stdout
    (g,) = json.loads((tmp_path / "cmp" / "compare_seeds.json").read_text())
    assert g["seeds"] == [3, 5]


@pytest.mark.parametrize("text, ok", [("0,1,2", [0, 1, 2]), ("2-4", [2, 3, 4]),
                                      ("0, 3", [0, 3]), ("1", None), ("0,0", None),
                                      ("a,b", None), ("-1,2", None)])
def test_parse_seeds(text, ok):
    if ok is None:
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(text)
    else:
        assert parse_seeds(text) == ok


def test_seed_and_seeds_together_and_a_used_directory_are_refused(group, tiny_npz, capsys):
    out, _ = group
    code, _, err = run_cli(capsys, "train", "--data", tiny_npz, "--seeds", "0,1", "--seed",
                           "2", *TINY)
    assert code != 0 and "--seed and --seeds" in err
    code, _, err = run_cli(capsys, "train", "--data", tiny_npz, "--seeds", "3,5", "--out", out,
                           *TINY)
    assert code != 0 and "already holds seeds" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
