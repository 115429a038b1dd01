"""Image datasets: MNIST and Fashion-MNIST with grey levels, CIFAR-10, and a colour MNIST.

Every loader returns a :class:`vaekit.data.Dataset` of uint8 images ``(N, C, H, W)`` with
``divisor=255`` (values in [0, 1]) and int64 labels. Files are looked up in ``data_dir``, then
``$VAEKIT_DATA_DIR``, then :func:`vaekit.download.cache_dir` (:func:`vaekit.data.dataset_dirs`);
when absent they are downloaded into the cache and their digests checked before they appear.

``mnist``
    LeCun et al.'s 70,000 digits, 28x28 grey levels, from the four idx files
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each gzipped ``.gz`` or not) in ``D/mnist/`` or ``D/``. Split
    50,000 / 10,000 / 10,000: the first 50,000 training images, the last 10,000 training
    images as validation (as in the IWAE and VampPrior papers), the 10,000 test images.
``fashion-mnist``
    Xiao, Rasul & Vollgraf (2017): the same format, sizes and split, looked up only in
    ``D/fashion-mnist/`` (its files have the same names as MNIST's).
``cifar10``
    Krizhevsky (2009), from the binary distribution ``cifar-10-binary.tar.gz`` (records of one
    label byte and 3072 image bytes, the R, G, B planes of 32x32, row-major), read as bytes:
    nothing is unpickled. Either the extracted ``D/cifar-10-batches-bin/`` or the archive
    ``D/cifar-10-binary.tar.gz`` (read without extracting). Stored ``(N, 3, 32, 32)``; split
    45,000 / 5,000 / 10,000: the last 5,000 training images are the validation set.
``colored-mnist``
    The embedded ``mnist-5k`` digits tinted (:func:`load_colored_mnist`), ``(N, 3, 28, 28)``,
    same 4000 / 500 / 500 split and labels. Built in, nothing to download.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .data import Dataset, _tensor, dataset_dirs, load_mnist_5k
from .download import cache_dir, download
from .errors import ChecksumError, DataError, DataNotFoundError

# --------------------------------------------------------------------------- idx files
IDX_LABELS = 0x00000801          # unsigned bytes, 1 dimension
IDX_IMAGES = 0x00000803          # unsigned bytes, 3 dimensions
_IDX_KINDS = {IDX_LABELS: "labels", IDX_IMAGES: "images"}
_GZIP_MAGIC = b"\x1f\x8b"


_FIX = "delete it to download it again"


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read an idx file (LeCun et al.'s format), gzipped or not, as a uint8 array.

    The format: a big-endian 32-bit magic number (``0x00000801`` labels, ``0x00000803``
    images: two zero bytes, type 0x08 = unsigned byte, the number of dimensions), one
    big-endian 32-bit size per dimension, then the values row-major. Gzip is recognised by
    its content, not by the file's name. ``magic``, when given, is the one expected.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the file is truncated, not gzip/idx, or of another kind than ``magic``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} does not exist") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a truncated or corrupt gzip file ({e}); {_FIX}") from None
    if len(raw) < 4:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, no idx header); {_FIX}")
    found = int.from_bytes(raw[:4], "big")
    wanted = (magic,) if magic is not None else tuple(_IDX_KINDS)
    if found not in wanted:
        expected = " or ".join(f"0x{m:08x} ({_IDX_KINDS.get(m, 'idx')})" for m in wanted)
        raise DataError(f"{path} has magic number 0x{found:08x}, expected {expected}: it is "
                        f"not such an idx file, or damaged; {_FIX}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, the header needs {header}); "
                        f"{_FIX}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != size:
        what = "truncated" if len(raw) < size else "longer than its header says"
        raise DataError(f"{path} is {what}: {len(raw)} bytes for dimensions "
                        f"{' x '.join(map(str, dims))}, expected {size}; {_FIX}")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- MNIST-like
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


@dataclass(frozen=True)
class IdxDataset:
    """Where an MNIST-like dataset's four idx files are looked up and downloaded from, their
    digests (of the ``.gz`` files downloaded) and its sizes and split."""

    name: str
    subdirs: tuple[str, ...]             # searched in each directory, "" = the directory
    mirrors: tuple[str, ...]             # base URLs, tried in order on a network error
    md5: dict[str, str]                  # of "<file>.gz", by IDX_FILES key
    sha256: dict[str, str]
    n_train: int = 60_000
    n_test: int = 10_000
    n_valid: int = 10_000                # the last n_valid training images
    image_shape: tuple[int, int] = (28, 28)
    classes: int = 10


MNIST = IdxDataset(
    "mnist", subdirs=("mnist", ""),
    mirrors=("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    # md5s as published by torchvision; sha256s as in tensorflow_datasets. The three digests
    # of the labels and test images were checked against ../shared/data/mnist (the original
    # .gz files); there the training images are uncompressed, so that file's .gz digests
    # could not be checked here.
    md5={"train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
         "test_images": "9fb629c4189551a2d022fa330f9573f3",
         "test_labels": "ec29112dd5afa0611ce80d1b7f02629c"},
    sha256={"train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"})

FASHION_MNIST = IdxDataset(
    "fashion-mnist", subdirs=("fashion-mnist",),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # all eight digits checked against the original files in ../shared/data/fashion-mnist
    md5={"train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
         "test_images": "bef4ecab320f06d8554ea6380940ec79",
         "test_labels": "bb300cfdad3c16e7a12a480ee83cd310"},
    sha256={"train_images": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train_labels": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "test_images": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "test_labels": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"})


def _find_idx_files(d: Path) -> dict[str, Path]:
    """The idx files present in ``d`` (uncompressed preferred to ``.gz``), by key."""
    found = {}
    for key, name in IDX_FILES.items():
        for p in (d / name, d / f"{name}.gz"):
            if p.is_file():
                found[key] = p
                break
    return found


def download_from_mirrors(mirrors: list[str], filename: str, dest: Path, *,
                          sha256: str | None = None, md5: str | None = None) -> Path:
    """Download ``filename`` from the first of ``mirrors`` (base URLs) that answers.

    A network or HTTP error moves on to the next mirror, and moves the failed one to the end
    of ``mirrors`` (which is changed in place, so that the next file tries a working mirror
    first); a checksum mismatch is raised at once.

    Raises:
        ChecksumError: a mirror served content with the wrong digest (nothing is written).
        DataError: no mirror could be reached.
    """
    errors = []
    for base in list(mirrors):
        try:
            return download(base + filename, dest, sha256, md5=md5)
        except ChecksumError:
            raise
        except DataError as e:
            errors.append(str(e).split("; download it by hand")[0])
            mirrors.remove(base)
            mirrors.append(base)
    raise DataError(f"{'; '.join(errors)}; download it by hand into {dest.parent}")


def _load_idx_dataset(spec: IdxDataset, data_dir, download_missing: bool) -> Dataset:
    dirs = dataset_dirs(data_dir, spec.subdirs)
    files = None
    for d in dirs:
        found = _find_idx_files(d)
        if len(found) == len(IDX_FILES):
            files = found
            break
    if files is None:
        where = ", ".join(str(d) for d in dirs)
        names = ", ".join(f"{n}[.gz]" for n in IDX_FILES.values())
        if not download_missing:
            raise DataNotFoundError(f"{spec.name} not found in {where}; put {names} there")
        target = cache_dir() / spec.name
        files = _find_idx_files(target)
        mirrors = list(spec.mirrors)
        for key, name in IDX_FILES.items():
            if key in files:
                continue
            p = target / f"{name}.gz"
            try:
                download_from_mirrors(mirrors, p.name, p, sha256=spec.sha256.get(key),
                                      md5=spec.md5.get(key))
            except ChecksumError:
                raise
            except DataError as e:
                raise DataError(f"{spec.name} is not in {where} and {e}; or put {names} in "
                                "--data-dir or $VAEKIT_DATA_DIR") from None
            files[key] = p
    arrays = {key: read_idx(files[key], IDX_IMAGES if key.endswith("images") else IDX_LABELS)
              for key in IDX_FILES}
    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ximg, ylab = files[f"{split}_images"], files[f"{split}_labels"]
        if x.shape != (n, *spec.image_shape):
            raise DataError(f"{ximg} holds images of shape {x.shape}, expected "
                            f"{(n, *spec.image_shape)} for {spec.name}; it is another "
                            f"dataset's file or damaged: {_FIX}")
        if y.shape != (n,):
            raise DataError(f"{ylab} holds {y.shape[0]} labels, expected {n} for {spec.name}; "
                            f"{_FIX}")
        if int(y.max()) >= spec.classes:
            raise DataError(f"{ylab} holds label {int(y.max())}, expected 0..{spec.classes - 1}"
                            f"; {_FIX}")
    x = arrays["train_images"][:, None]              # (N, 1, H, W)
    y = arrays["train_labels"].astype(np.int64)
    cut = spec.n_train - spec.n_valid
    splits = (x[:cut], x[cut:], arrays["test_images"][:, None])
    labels = (y[:cut], y[cut:], arrays["test_labels"].astype(np.int64))
    return Dataset(spec.name, *(_tensor(a) for a in splits), divisor=255.0,
                   train_labels=_tensor(labels[0]), valid_labels=_tensor(labels[1]),
                   test_labels=_tensor(labels[2]))


def load_mnist(data_dir: str | os.PathLike | None = None,
               download_missing: bool = True) -> Dataset:
    """MNIST with grey levels (LeCun et al. 1998): uint8 ``(N, 1, 28, 28)``, divisor 255,
    split 50,000 / 10,000 / 10,000 (the first 50,000 training images; the last 10,000 training
    images as validation; the test set).

    The four idx files (each ``.gz`` or not) are looked up as ``D/mnist/<file>`` then
    ``D/<file>`` for D in ``data_dir``, ``$VAEKIT_DATA_DIR``, the cache; when absent the
    original ``.gz`` files are downloaded into ``cache_dir()/mnist/`` (mirrors in
    :data:`MNIST`, tried in order), md5 and sha256 checked.

    Raises:
        DataNotFoundError: not found and ``download_missing`` is False.
        DataError: a file is truncated or not MNIST's, or no mirror could be reached.
        ChecksumError: a downloaded file has the wrong digest (it is not kept).
    """
    return _load_idx_dataset(MNIST, data_dir, download_missing)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None,
                       download_missing: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): uint8 ``(N, 1, 28, 28)``, divisor 255,
    split 50,000 / 10,000 / 10,000 like :func:`load_mnist` (the last 10,000 training images
    are the validation set).

    Its four idx files have the same names as MNIST's, so they are looked up only as
    ``D/fashion-mnist/<file>`` (never ``D/<file>``, which would be MNIST's); when absent they
    are downloaded into ``cache_dir()/fashion-mnist/``, md5 and sha256 checked.

    Raises:
        DataNotFoundError, DataError, ChecksumError: as :func:`load_mnist`.
    """
    return _load_idx_dataset(FASHION_MNIST, data_dir, download_missing)


# --------------------------------------------------------------------------- CIFAR-10
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)     # base URLs, in order
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"
# md5 as published on https://www.cs.toronto.edu/~kriz/cifar.html (and used by torchvision-
# style loaders); sha256 as in tensorflow_datasets. Neither checked against the real archive
# here (CIFAR-10 is not on these machines).
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
CIFAR10_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR10_BATCH_SIZE = 10_000          # records per batch file
CIFAR10_VALID_SIZE = 5_000           # the last 5,000 training images
_CIFAR10_RECORD = 1 + 3 * 32 * 32


def _cifar_records(raw: bytes, source: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch file: ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``."""
    n = CIFAR10_BATCH_SIZE
    if len(raw) != n * _CIFAR10_RECORD:
        raise DataError(f"{source} has {len(raw)} bytes, expected {n} records of "
                        f"{_CIFAR10_RECORD} = {n * _CIFAR10_RECORD}: it is truncated or not "
                        f"a CIFAR-10 binary batch; {_FIX}")
    a = np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(n, _CIFAR10_RECORD)
    labels = a[:, 0].astype(np.int64)
    if int(labels.max()) > 9:
        raise DataError(f"{source} holds label {int(labels.max())}, expected 0..9: it is not "
                        f"a CIFAR-10 batch (CIFAR-100's binary format differs); {_FIX}")
    return a[:, 1:].reshape(n, 3, 32, 32), labels


def _escapes(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or "\\" in name


def _read_cifar_archive(path: Path) -> dict[str, bytes]:
    """The six batch files' bytes, read from the archive in one pass, without extracting."""
    wanted = {f"{CIFAR10_FOLDER}/{b}": b for b in CIFAR10_BATCHES}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if _escapes(m.name):
                    raise DataError(f"{path} holds a member {m.name!r} whose path leaves the "
                                    f"archive's folder: it is not the CIFAR-10 archive; {_FIX}")
                name = m.name[2:] if m.name.startswith("./") else m.name
                if name not in wanted:
                    continue
                if not m.isreg():
                    raise DataError(f"{path}: {m.name} is not a regular file; {_FIX}")
                f = tf.extractfile(m)
                out[wanted[name]] = f.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} does not exist") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is truncated or not a tar.gz archive ({e}); {_FIX}") from None
    missing = [b for b in CIFAR10_BATCHES if b not in out]
    if missing:
        raise DataError(f"{path} has no {CIFAR10_FOLDER}/{missing[0]}: it is not the CIFAR-10 "
                        f"binary archive ({CIFAR10_ARCHIVE}); {_FIX}")
    return out


def load_cifar10(data_dir: str | os.PathLike | None = None,
                 download_missing: bool = True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009) from its binary distribution: uint8 ``(N, 3, 32, 32)``
    (channels R, G, B), divisor 255, labels 0..9; split 45,000 / 5,000 / 10,000, the last
    5,000 training images (the end of ``data_batch_5``) being the validation set.

    Looked up in each directory D (``data_dir``, ``$VAEKIT_DATA_DIR``, the cache) as the
    extracted ``D/cifar-10-batches-bin/`` (``data_batch_{1..5}.bin``, ``test_batch.bin``) or
    the archive ``D/cifar-10-binary.tar.gz``, read as it is (no extraction; member paths that
    leave the archive's folder are refused). When absent the archive is downloaded into the
    cache, md5 and sha256 checked. Nothing is unpickled.

    Raises:
        DataNotFoundError: not found and ``download_missing`` is False.
        DataError: a file is truncated or not CIFAR-10's, or the download failed.
        ChecksumError: the downloaded archive has the wrong digest (it is not kept).
    """
    dirs = dataset_dirs(data_dir)
    batches = None
    for d in dirs:
        folder, archive = d / CIFAR10_FOLDER, d / CIFAR10_ARCHIVE
        if all((folder / b).is_file() for b in CIFAR10_BATCHES):
            batches = {b: (folder / b).read_bytes() for b in CIFAR10_BATCHES}
            sources = {b: folder / b for b in CIFAR10_BATCHES}
            break
        if archive.is_file():
            batches = _read_cifar_archive(archive)
            sources = {b: archive for b in CIFAR10_BATCHES}
            break
    if batches is None:
        where = ", ".join(str(d) for d in dirs)
        if not download_missing:
            raise DataNotFoundError(f"cifar10 not found in {where}; put {CIFAR10_ARCHIVE} or "
                                    f"the extracted {CIFAR10_FOLDER}/ there")
        archive = cache_dir() / CIFAR10_ARCHIVE
        try:
            download_from_mirrors(list(CIFAR10_MIRRORS), CIFAR10_ARCHIVE, archive,
                                  sha256=CIFAR10_SHA256, md5=CIFAR10_MD5)
        except ChecksumError:
            raise
        except DataError as e:
            raise DataError(f"cifar10 is not in {where} and {e}; or put {CIFAR10_ARCHIVE} in "
                            "--data-dir or $VAEKIT_DATA_DIR") from None
        batches = _read_cifar_archive(archive)
        sources = {b: archive for b in CIFAR10_BATCHES}
    decoded = {}
    for b in CIFAR10_BATCHES:
        src = sources[b]
        what = str(src) if src.name == b else f"{src}: {CIFAR10_FOLDER}/{b}"
        decoded[b] = _cifar_records(batches[b], what, _FIX)
    x = np.concatenate([decoded[b][0] for b in CIFAR10_BATCHES[:5]])
    y = np.concatenate([decoded[b][1] for b in CIFAR10_BATCHES[:5]])
    cut = len(x) - CIFAR10_VALID_SIZE
    xte, yte = decoded["test_batch.bin"]
    return Dataset("cifar10", _tensor(x[:cut]), _tensor(x[cut:]), _tensor(xte), divisor=255.0,
                   train_labels=_tensor(y[:cut]), valid_labels=_tensor(y[cut:]),
                   test_labels=_tensor(yte))


# --------------------------------------------------------------------------- colored MNIST
COLORED_MNIST_SEED = 0


def colorize(grey: np.ndarray, background: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Tint grey-level images: ``value = background * (1 - g) + stroke * g`` per channel, with
    ``g = grey / 255`` in [0, 1]; ``grey`` (N, 1, H, W) uint8, ``background`` and ``stroke``
    (N, 3) colours 0..255. Returns (N, 3, H, W) uint8 (rounded to the nearest level)."""
    g = grey.astype(np.float32) / 255.0
    bg = background.astype(np.float32)[:, :, None, None]
    fg = stroke.astype(np.float32)[:, :, None, None]
    return np.rint(bg * (1.0 - g) + fg * g).astype(np.uint8)


def load_colored_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
    """A small colour dataset built from the embedded ``mnist-5k`` digits: uint8
    ``(N, 3, 28, 28)``, divisor 255, the same 4000 / 500 / 500 split and labels.

    Each image gets a background colour with every channel uniform in 0..127 and a stroke
    colour with every channel uniform in 128..255 (so the digit stays brighter than its
    background), drawn with ``numpy.random.default_rng(COLORED_MNIST_SEED)`` for the train,
    valid and test images in that order; then ``value = background * (1 - g) + stroke * g``
    with ``g`` the grey level in [0, 1] (:func:`colorize`). ``data_dir`` is not used.
    """
    base = load_mnist_5k()
    rng = np.random.default_rng(COLORED_MNIST_SEED)
    parts = []
    for split in ("train", "valid", "test"):
        grey = base.raw(split).numpy()
        n = grey.shape[0]
        background = rng.integers(0, 128, size=(n, 3))
        stroke = rng.integers(128, 256, size=(n, 3))
        parts.append(_tensor(colorize(grey, background, stroke)))
    return Dataset("colored-mnist", *parts, divisor=255.0, train_labels=base.train_labels,
                   valid_labels=base.valid_labels, test_labels=base.test_labels)
