"""Tables (CSV / Parquet) as datasets, the table likelihood, and standardisation with the
log-likelihood reported in the original units."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, run_cli
from torch.distributions import Bernoulli, Categorical, Normal

from vaekit.data import load_dataset, resolve_standardize, standardize
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.observations.table import TableObservation, parse_layout
from vaekit.runs import evaluate_run, export_samples, load_run
from vaekit.tables import infer_kind, load_table, parse_column_kinds

run = run_cli


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "height": rng.normal(170, 10, n),                       # real
        "grade": rng.integers(1, 4, n),                         # 3 integers: categorical
        "smoker": rng.choice(["yes", "no"], n),                 # 2 strings: binary
        "city": rng.choice(["Oslo", "Lima", "Pune", "Nice"], n),  # 4 strings: categorical
        "member": rng.random(n) < 0.3,                          # bool: binary
        "visits": rng.integers(0, 60, n),                       # many integers: real
        "species": rng.choice(["a", "b", "c"], n),              # the labels
    })


# --------------------------------------------------------------------------- the likelihood
LAYOUT = "real,binary,categorical:3,real,categorical:4,binary"


def _reference_log_prob(out, x, std):
    """The same density term by term from torch.distributions."""
    total, i, r = 0, 0, 0
    for kind, width in parse_layout(LAYOUT):
        o, v = out[..., i:i + width], x[..., i:i + width]
        if kind == "real":
            total = total + Normal(o[..., 0], std[r]).log_prob(v[..., 0])
            r += 1
        elif kind == "binary":
            total = total + Bernoulli(logits=o[..., 0]).log_prob(v[..., 0])
        else:
            total = total + Categorical(logits=o).log_prob(v.argmax(-1))
        i += width
    return total


def _random_rows(n, generator):
    parts = []
    for kind, width in parse_layout(LAYOUT):
        if kind == "real":
            parts.append(torch.randn(n, 1, generator=generator))
        elif kind == "binary":
            parts.append(torch.randint(0, 2, (n, 1), generator=generator).float())
        else:
            parts.append(torch.nn.functional.one_hot(
                torch.randint(0, width, (n,), generator=generator), width).float())
    return torch.cat(parts, 1)


def test_table_density_equals_the_product_of_its_columns_likelihoods():
    g = torch.Generator().manual_seed(0)
    obs = TableObservation((11,), LAYOUT)
    with torch.no_grad():
        obs.log_std.copy_(torch.tensor([0.3, -0.5]))
    out = torch.randn(3, 7, 11, generator=g) * 2
    x = _random_rows(7, g)                                # broadcast over the 3 draws of z
    got = obs(out).log_prob(x)
    assert got.shape == (3, 7)
    torch.testing.assert_close(got, _reference_log_prob(out, x, obs.std().detach()))


def test_discrete_table_likelihood_sums_to_one_over_every_row():
    layout = "binary,categorical:3,categorical:2,binary"
    obs = TableObservation((7,), layout)
    out = torch.randn(4, 7, generator=torch.Generator().manual_seed(1)) * 3
    rows = []
    for b1, c1, c2, b2 in itertools.product(range(2), range(3), range(2), range(2)):
        rows.append(torch.cat([torch.tensor([float(b1)]), torch.eye(3)[c1], torch.eye(2)[c2],
                               torch.tensor([float(b2)])]))
    x = torch.stack(rows)                                  # (24, 7): every possible row
    lp = obs(out[:, None, :]).log_prob(x[None])            # (4, 24)
    torch.testing.assert_close(lp.logsumexp(1), torch.zeros(4), atol=1e-5, rtol=0)


def test_table_draws_are_one_hot_and_follow_the_probabilities():
    obs = TableObservation((6,), "binary,categorical:3,real,real")
    out = torch.tensor([0.8, 1.0, -1.0, 0.2, 2.0, -3.0])
    torch.manual_seed(0)
    n = 40_000
    x = obs(out).sample((n,))
    assert x.shape == (n, 6)
    assert set(x[:, 0].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x[:, 1:4].sum(1), torch.ones(n))
    p = torch.cat([torch.sigmoid(out[:1]), out[1:4].softmax(0)])
    freq = torch.cat([x[:, :1].mean(0), x[:, 1:4].mean(0)])
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() < 5 * se).all(), (freq, p)             # 5 standard errors
    assert abs(float(x[:, 4].mean()) - 2.0) < 5 / math.sqrt(n)       # sigma = 1
    torch.testing.assert_close(obs.mean(out)[:4], p)


def test_bad_layouts_are_refused():
    with pytest.raises(ConfigError, match="categorical:K"):
        parse_layout("real,categorical:1")
    with pytest.raises(ConfigError, match="describes 4 values but the data have 5"):
        TableObservation((5,), "real,categorical:3")
    with pytest.raises(ConfigError, match="needs a table"):
        TableObservation((5,), "")


# --------------------------------------------------------------------------- reading tables
def test_column_kinds_are_inferred_and_can_be_overridden(tmp_path):
    p = tmp_path / "people.csv"
    _frame().to_csv(p, index=False)
    ds = load_table(p, label_column="species")
    kinds = {c.name: c.kind for c in ds.table.columns}
    assert kinds == {"height": "real", "grade": "categorical", "smoker": "binary",
                     "city": "categorical", "member": "binary", "visits": "real"}
    assert ds.table.layout == "real,categorical:3,binary,categorical:4,binary,real"
    assert ds.event_shape == (11,) and ds.label_names == ["a", "b", "c"]
    assert ds.raw_train.shape[0] == 160 and ds.raw_valid.shape[0] == 20
    assert ds.auto_standardize
    ds2 = load_table(p, "grade=real,city=drop,visits=categorical")
    kinds = {c.name: c.kind for c in ds2.table.columns}
    assert "city" not in kinds and kinds["grade"] == "real" and kinds["species"] == "categorical"
    assert kinds["visits"] == "categorical"
    with pytest.raises(ConfigError, match="no column 'age'; its columns are height, grade"):
        load_table(p, "age=real")
    with pytest.raises(DataError, match="'grade' holds 3 distinct values; a binary column"):
        load_table(p, "grade=binary")
    with pytest.raises(DataError, match="'city' holds non-numeric values"):
        load_table(p, "city=real")
    with pytest.raises(ConfigError, match="must be one of real, binary, categorical, drop"):
        parse_column_kinds("grade=ordinal")


def test_missing_and_constant_columns_are_refused_by_name(tmp_path):
    f = _frame(50)
    f.loc[[7, 9], "height"] = np.nan
    p = tmp_path / "gaps.csv"
    f.to_csv(p, index=False)
    with pytest.raises(DataError, match=r"column 'height' has 2 missing values \(first in row "
                                        r"8\).*--columns height=drop"):
        load_table(p)
    assert load_table(p, "height=drop").table.dim == 13          # dropping it works
    f = _frame(50)
    f["unit"] = "cm"
    f.to_csv(p, index=False)
    with pytest.raises(DataError, match="'unit' holds one value"):
        load_table(p)
    with pytest.raises(DataError, match="'x' holds 1000 distinct non-numeric"):
        infer_kind(pd.Series([f"id{i}" for i in range(1000)], name="x"))


def test_encoding_round_trips_to_the_table(tmp_path):
    f = _frame(60)
    p = tmp_path / "t.csv"
    f.to_csv(p, index=False)
    ds = load_table(p)
    back = ds.table.decode(ds.table.encode(f))
    for name in back.columns:
        if name in ("height", "visits"):                      # real columns
            np.testing.assert_allclose(back[name], f[name], rtol=1e-6)
        else:
            assert back[name].astype(str).tolist() == f[name].astype(str).tolist(), name


def test_parquet_and_tsv_read_like_csv(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install pyarrow)")
    f = _frame(80)
    f.to_csv(tmp_path / "t.csv", index=False)
    f.to_parquet(tmp_path / "t.parquet")
    f.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    a, b, c = (load_table(tmp_path / n) for n in ("t.csv", "t.parquet", "t.tsv"))
    assert a.table == b.table == c.table
    torch.testing.assert_close(a.raw_train, b.raw_train)
    torch.testing.assert_close(a.raw_train, c.raw_train)


def test_unreadable_tables_give_clear_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    with pytest.raises(DataError, match="bad.csv"):
        load_table(p)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_table(tmp_path / "empty.csv")


# --------------------------------------------------------------------------- standardisation
def test_standardisation_uses_the_training_split_and_only_real_columns(tmp_path):
    p = tmp_path / "t.csv"
    _frame().to_csv(p, index=False)
    raw = load_table(p)
    ds = standardize(raw)
    mask = raw.table.real_mask()
    train = raw.train.double().numpy()
    np.testing.assert_allclose(ds.standardization.mean.numpy()[mask], train.mean(0)[mask],
                               rtol=1e-6)
    np.testing.assert_allclose(ds.standardization.std.numpy()[mask], train.std(0)[mask],
                               rtol=1e-5)
    assert (ds.standardization.std.numpy()[~mask] == 1).all()
    np.testing.assert_allclose(ds.train.numpy()[:, mask].mean(0), 0, atol=1e-5)
    torch.testing.assert_close(ds.to_original(ds.test), raw.test, rtol=1e-5, atol=1e-4)
    assert ds.standardization.log_abs_det == pytest.approx(
        -np.log(train.std(0)[mask]).sum(), rel=1e-6)


def test_standardize_on_refuses_8_bit_and_binary_data():
    ds = load_dataset("mnist-5k")
    with pytest.raises(ConfigError, match="8-bit"):
        resolve_standardize("on", ds)
    assert resolve_standardize("auto", ds) == "off"


def test_log_likelihood_is_reported_in_the_original_units(tmp_path, capsys):
    """A one-component full-covariance Gaussian fitted by EM is the maximum-likelihood
    Gaussian, which is affine-equivariant: fitted on standardised data and reported with the
    Jacobian, its test log-likelihood equals the one fitted on the raw data, and both equal
    scikit-learn's."""
    from sklearn.mixture import GaussianMixture
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    x = (rng.normal(size=(1000, 4)) @ a.T * [3.0, 0.5, 8.0, 1.0] + [10, -5, 100, 0])
    p = tmp_path / "real.npy"
    np.save(p, x.astype(np.float32))
    results = {}
    for mode in ("on", "off"):
        code, _, err = run(capsys, "train", "--data", p, "--model", "gmm", "--num-components",
                           "1", "--standardize", mode, "--out", tmp_path / mode,
                           "--no-progress")
        assert code == 0, err
        results[mode] = json.loads((tmp_path / mode / "eval.json").read_text())
    assert results["on"]["log_jacobian"] == pytest.approx(
        -load_dataset(str(p)).train.double().std(0, correction=0).log().sum().item(),
        rel=1e-5)
    assert "log_jacobian" not in results["off"]
    assert results["on"]["log_likelihood"] == pytest.approx(results["off"]["log_likelihood"],
                                                            abs=2e-3)
    ds = load_dataset(str(p))
    ref = GaussianMixture(1, covariance_type="full").fit(ds.train.double().numpy())
    assert results["off"]["log_likelihood"] == pytest.approx(
        ref.score(ds.test.double().numpy()), abs=2e-3)


# --------------------------------------------------------------------------- end to end
def test_a_table_trains_evaluates_samples_and_reloads(tmp_path, capsys):
    p = tmp_path / "people.csv"
    _frame(300).to_csv(p, index=False)
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--data", p, "--label-column", "species",
                            "--out", out, *TINY)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["likelihood"] == "table"
    assert config["model"]["table_columns"] == "real,categorical:3,binary,categorical:4,binary,real"
    assert config["data"]["standardize"] == "on"
    data = json.loads((out / "data.json").read_text())
    assert [c["name"] for c in data["table"]["columns"]][:2] == ["height", "grade"]
    assert "original units" in stdout
    assert (out / "marginals.png").is_file() and (out / "pairs.png").is_file()
    saved = json.loads((out / "eval.json").read_text())
    # the reported numbers are the model's (standardised) ones plus the Jacobian
    r = load_run(out)
    from vaekit.data import eval_split
    x = eval_split(r.dataset, "test", r.binarization)
    torch.manual_seed(0)
    own = r.family.evaluate(r.model, x, 20)
    assert saved["log_likelihood"] == pytest.approx(own.log_likelihood + saved["log_jacobian"],
                                                    abs=1e-4)
    assert saved["kl"] == pytest.approx(own.kl, abs=1e-5)
    again = evaluate_run(r, save=False)
    assert again.log_likelihood == pytest.approx(saved["log_likelihood"], abs=1e-6)

    code, stdout, err = run(capsys, "sample", out, "--out", tmp_path / "s.csv", "--num", "400",
                            "--seed", "3")
    assert code == 0, err
    s = pd.read_csv(tmp_path / "s.csv")
    assert list(s.columns) == ["height", "grade", "smoker", "city", "member", "visits"]
    assert len(s) == 400
    assert set(s["city"]) <= {"Oslo", "Lima", "Pune", "Nice"} and set(s["grade"]) <= {1, 2, 3}
    assert 120 < s["height"].mean() < 220                      # original units, not standardised
    export_samples(r, tmp_path / "s.npy", 10, seed=3)
    assert np.load(tmp_path / "s.npy").shape == (10, 11)
    export_samples(r, tmp_path / "s2.csv", 400, seed=3)
    assert pd.read_csv(tmp_path / "s2.csv").equals(s)         # the seed fixes the draw

    f = _frame(300)
    f["height"] = f["height"] / 100                            # the data change: metres
    f.to_csv(p, index=False)
    with pytest.raises(CheckpointError, match="changed since it was trained"):
        load_run(out)


def test_table_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    f = _frame(40)
    f.loc[3, "city"] = None
    p = tmp_path / "gaps.csv"
    f.to_csv(p, index=False)
    code, _, err = run(capsys, "train", "--data", p, "--out", tmp_path / "r", *TINY)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0 and len(lines) == 1 and "column 'city' has 1 missing values" in lines[0]
    assert not (tmp_path / "r").exists()
    code, _, err = run(capsys, "train", "--data", p, "--columns", "zip=drop", *TINY)
    assert code != 0 and "no column 'zip'" in err
    code, _, err = run(capsys, "train", "--data", "x.npy", "--columns", "a=real", *TINY)
    assert code != 0 and "apply to tables" in err


def test_two_dimensional_data_get_a_scatter_of_samples(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--data", "gaussian-mixture-2d", "--out",
                       tmp_path / "r", *TINY)
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["likelihood"] == "gaussian"        # auto: real values
    assert (tmp_path / "r" / "samples.png").is_file()


def test_the_readme_s_example_data(tmp_path):
    """examples/make_data.py writes the README's data: the diabetes table reads as 10 real
    columns and a binary sex, 354 / 44 / 44 rows."""
    import runpy

    from conftest import REPO
    make = runpy.run_path(str(REPO / "examples" / "make_data.py"))["main"]
    make(tmp_path)
    ds = load_table(tmp_path / "diabetes.csv")
    kinds = {c.name: c.kind for c in ds.table.columns}
    assert kinds.pop("sex") == "binary" and set(kinds.values()) == {"real"} and len(kinds) == 10
    assert [ds.raw(s).shape[0] for s in ("train", "valid", "test")] == [354, 44, 44]
    assert np.load(tmp_path / "gauss10.npy").shape == (5000, 10)
    assert np.load(tmp_path / "moons.npy").shape == (3000, 2)
