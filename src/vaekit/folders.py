"""A folder of images as a dataset (``--data path/to/folder``), read with Pillow.

Layout:
    * images (PNG, JPEG, BMP, GIF, TIFF, WebP) directly in the folder: one unlabelled set,
      split 80 / 10 / 10 by a fixed permutation (seed 0, as users' arrays);
    * class subfolders (``cats/``, ``dogs/``, ...): the subfolder is the label (classes in
      sorted order, label i = the i-th);
    * ``train/``, ``valid/`` (or ``validation/``, ``val/``) and ``test/`` subfolders, each of
      images or of class subfolders: the splits as given (a missing ``valid`` or ``test`` is
      carved from ``train``).

Colour is kept as found: when every image is grey the set is ``(N, 1, H, W)``, otherwise every
image is converted to RGB, ``(N, 3, H, W)`` (an alpha channel is dropped). Images stay 8-bit,
stored as uint8 (values = raw / 255). All images must have one size, unless ``image_size``
is given: then each is resized (shorter side to ``image_size``, bilinear) and centre-cropped to
``image_size x image_size``. Files that are not images, or that Pillow cannot read, are refused
with their name. Hidden files (``.name``) are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data import Dataset, _split_array, _tensor
from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid",
               "test": "test"}


def _entries(d: Path) -> tuple[list[Path], list[Path]]:
    """(image files, subfolders) of ``d``, sorted, hidden ones left out.

    Raises:
        DataError: a file that is not an image.
    """
    files, dirs = [], []
    for p in sorted(d.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            dirs.append(p)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            raise DataError(f"{p} is not an image ({', '.join(IMAGE_SUFFIXES)}); remove it or "
                            "move it out of the image folder")
    return files, dirs


def _labelled(d: Path, classes: list[str] | None) -> tuple[list[Path], list[int] | None,
                                                           list[str] | None]:
    """The images of ``d`` and their labels (from class subfolders, if it has them)."""
    files, dirs = _entries(d)
    if not dirs:
        return files, None, classes
    if files:
        raise DataError(f"{d} holds both images ({files[0].name}) and class subfolders "
                        f"({dirs[0].name}/): put every image in a class subfolder")
    names = [p.name for p in dirs]
    if classes is None:
        classes = names
    elif set(names) - set(classes):
        raise DataError(f"{d} has classes {sorted(set(names) - set(classes))} that the training "
                        f"split does not have ({', '.join(classes)})")
    paths, labels = [], []
    for p in dirs:
        sub, subdirs = _entries(p)
        if subdirs:
            raise DataError(f"{p} holds subfolders ({subdirs[0].name}/); class subfolders hold "
                            "images only")
        paths += sub
        labels += [classes.index(p.name)] * len(sub)
    return paths, labels, classes


def _read(paths: list[Path], image_size: int | None) -> tuple[np.ndarray, int]:
    """``(N, C, H, W)`` uint8 from the files, C = 1 when all are grey, else 3."""
    from PIL import Image, UnidentifiedImageError

    images, grey = [], True
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                if im.mode not in ("L", "1", "I;16", "I", "F"):
                    grey = False
                images.append(im.copy())
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{p} cannot be read as an image ({e}); remove it or replace it") \
                from None
    mode = "L" if grey else "RGB"
    arrays = []
    for im in images:
        im = im.convert(mode)
        if image_size is not None:
            w, h = im.size
            scale = image_size / min(w, h)
            im = im.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))),
                           Image.Resampling.BILINEAR)
            w, h = im.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    first = arrays[0].shape
    for a, p in zip(arrays, paths, strict=True):
        if a.shape != first:
            raise DataError(f"the images have different sizes ({paths[0].name}: "
                            f"{first[2]}x{first[1]}, {p.name}: {a.shape[2]}x{a.shape[1]}); pass "
                            "--image-size N to resize and centre-crop them to N x N")
    return np.stack(arrays), 1 if grey else 3


def load_image_folder(path: str | os.PathLike, image_size: int | None = None) -> Dataset:
    """The images of a folder as a :class:`~vaekit.data.Dataset` (see the module docstring).

    Raises:
        DataError: no images, a file that is not an image, a layout it cannot read, or images
            of different sizes without ``image_size``.
    """
    root = Path(path).expanduser()
    files, dirs = _entries(root)
    split_dirs = {SPLIT_NAMES[d.name.lower()]: d for d in dirs if d.name.lower() in SPLIT_NAMES}
    parts: dict[str, tuple[list[Path], list[int] | None]] = {}
    classes = None
    if split_dirs:
        if "train" not in split_dirs or files or len(split_dirs) != len(dirs):
            raise DataError(f"{root}: with train/valid/test subfolders, everything must be in "
                            "them (train/ is needed)")
        for split in ("train", "valid", "test"):
            if split in split_dirs:
                paths, labels, classes = _labelled(split_dirs[split], classes)
                parts[split] = (paths, labels)
    else:
        paths, labels, classes = _labelled(root, None)
        parts["train"] = (paths, labels)
    if not parts["train"][0]:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    every = [p for ps, _ in parts.values() for p in ps]
    array, _ = _read(every, image_size)
    arrays, start = {}, 0
    for split, (ps, ls) in parts.items():
        arrays[split] = (array[start:start + len(ps)],
                         None if ls is None else np.asarray(ls, dtype=np.int64))
        start += len(ps)
    missing = [s for s in ("valid", "test") if s not in arrays]
    if missing:
        x, y = arrays["train"]
        frac = (0.8, 0.1 if "valid" in missing else 0.0, 0.1 if "test" in missing else 0.0)
        (tr, va, te), ys = _split_array(x, y, frac)
        ys = ys or [None, None, None]
        arrays["train"] = (tr, ys[0])
        if "valid" in missing:
            arrays["valid"] = (va, ys[1])
        if "test" in missing:
            arrays["test"] = (te, ys[2])
    for split in ("valid", "test"):
        if len(arrays[split][0]) == 0:
            raise DataError(f"{root}: the {split} split is empty")
    return Dataset(root.name, *(_tensor(arrays[s][0]) for s in ("train", "valid", "test")),
                   divisor=255.0, train_labels=_tensor(arrays["train"][1]),
                   valid_labels=_tensor(arrays["valid"][1]),
                   test_labels=_tensor(arrays["test"][1]), label_names=classes)
