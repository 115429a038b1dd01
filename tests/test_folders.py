"""A folder of images as a dataset: grey or colour kept as found, class subfolders as labels,
split subfolders, --image-size resizing, and one clear line for a file that is not an image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.cli import main
from vaekit.errors import DataError
from vaekit.folders import load_image_folder


def _write(path, array, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_grey_pngs_are_read_exactly_and_split(tmp_path):
    x = _images(20, (6, 5))
    for i, a in enumerate(x):
        _write(tmp_path / "digits" / f"{i:02d}.png", a)
    d = load_image_folder(tmp_path / "digits")
    assert d.event_shape == (1, 6, 5) and d.raw_train.dtype == torch.uint8 and d.divisor == 255
    assert (len(d.raw_train), len(d.raw_valid), len(d.raw_test)) == (16, 2, 2)
    every = torch.cat([d.raw_train, d.raw_valid, d.raw_test])[:, 0].numpy()
    assert sorted(map(bytes, every)) == sorted(map(bytes, x))       # the same pixels
    assert d.train_labels is None and d.name == "digits"


def test_class_subfolders_are_labels_and_colour_is_kept(tmp_path):
    rgb = _images(9, (4, 4, 3), seed=1)
    for i, a in enumerate(rgb):
        _write(tmp_path / "pets" / ("cat" if i < 4 else "dog") / f"{i}.png", a)
    grey = _images(1, (4, 4), seed=2)[0]
    _write(tmp_path / "pets" / "dog" / "grey.png", grey)              # one grey image: RGB
    d = load_image_folder(tmp_path / "pets")
    assert d.event_shape == (3, 4, 4) and d.label_names == ["cat", "dog"]
    labels = torch.cat([d.train_labels, d.valid_labels, d.test_labels])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 6
    images = torch.cat([d.raw_train, d.raw_valid, d.raw_test]).permute(0, 2, 3, 1).numpy()
    assert any(np.array_equal(a, rgb[0]) for a in images)             # channels in order
    assert any(np.array_equal(a, np.repeat(grey[..., None], 3, 2)) for a in images)


def test_split_folders_and_resizing(tmp_path):
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        for i in range(n):                                       # sizes 8x10, 10x11, ...
            a = _images(1, (10 + i, 8 + 2 * i, 3), seed=n + i)[0]
            _write(tmp_path / "f" / split / "a" / f"{i}.jpg", a, "JPEG")
    with pytest.raises(DataError, match=r"different sizes .* pass --image-size N"):
        load_image_folder(tmp_path / "f")
    d = load_image_folder(tmp_path / "f", image_size=6)
    assert (len(d.raw_train), len(d.raw_valid), len(d.raw_test)) == (6, 2, 3)
    assert d.event_shape == (3, 6, 6) and d.label_names == ["a"]
    big = np.zeros((20, 40), np.uint8)
    big[:, 10:30] = 255                                               # a centred white band
    _write(tmp_path / "g" / "band.png", big)
    for i in range(9):
        _write(tmp_path / "g" / f"{i}.png", big)
    d = load_image_folder(tmp_path / "g", image_size=10)              # 20x40 -> 10x20 -> 10x10
    assert d.event_shape == (1, 10, 10)
    assert (d.raw_train[0, 0] > 200).float().mean() > 0.9             # the centre is kept


def test_bad_folders_give_one_clear_line_and_write_nothing(tmp_path, capsys):
    _write(tmp_path / "imgs" / "0.png", _images(1, (4, 4))[0])
    for i in range(1, 12):
        _write(tmp_path / "imgs" / f"{i}.png", _images(1, (4, 4), seed=i)[0])
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "imgs"), "--out", str(out), "--epochs", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1 and "notes.txt is not an image" in err[0]
    assert not out.exists()
    (tmp_path / "imgs" / "notes.txt").unlink()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png cannot be read as an image"):
        load_image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(tmp_path / "empty")


def test_a_folder_trains_through_the_command_line(tmp_path, capsys):
    for i, a in enumerate(_images(40, (8, 8, 3))):
        _write(tmp_path / "colour" / ("a" if i % 2 else "b") / f"{i}.png", a)
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "colour"), "--out", str(out), "--epochs", "1",
                 "--batch-size", "16", "--latent-dim", "2", "--conv-channels", "4",
                 "--likelihood", "discretized-logistic", "--logistic-components", "2",
                 "--eval-num-samples", "5", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    ev = json.loads((out / "eval.json").read_text())
    assert ev["bits_per_dim"] > 0 and ev["binarization"] == "none"
    assert (out / "samples.png").is_file() and (out / "reconstructions.png").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["dataset"] == str((tmp_path / "colour").resolve())
