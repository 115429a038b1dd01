"""A table as a dataset (``--data file.csv`` or ``file.parquet``), read with pandas.

Each column is one of:

``real``         numbers, modelled by a Gaussian with the column's own sigma
``binary``       exactly two values (numbers, strings or booleans), modelled by a Bernoulli
``categorical``  a few values, modelled by a K-way categorical
``drop``         left out (an identifier, free text)

Kinds are inferred (:func:`infer_kind`) and can be overridden per column (``--columns
"age=real,zip=drop"``). A column named by ``--label-column`` becomes the dataset's labels
(figures colour by them) and is not modelled.

Encoding: an example is a vector with one value per real or binary column (a binary column
is 1 for the second of its two sorted values) and a one-hot block of K values per categorical
column, in the table's column order; :class:`TableSchema` maps the vector back to the table
(:meth:`TableSchema.decode`). The one-hot encoding is a bijection of the categories, so a
probability of the vector is the probability of the row.

Rows are split 80 / 10 / 10 by a fixed permutation (seed 0), as users' arrays are. Missing
values are refused with the column's name. Real columns are standardised with the training
split's mean and standard deviation when ``--standardize`` is ``auto`` (the default) or
``on`` (:func:`vaekit.data.standardize`); log-likelihoods are reported in the original
units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, _split_array, _tensor
from .errors import ConfigError, DataError

KINDS = ("real", "binary", "categorical")
OVERRIDES = (*KINDS, "drop")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
# An integer column with at most this many distinct values is inferred categorical.
MAX_INFERRED_INTEGER_CATEGORIES = 10
# A non-numeric column with more distinct values than this is refused (drop it).
MAX_CATEGORIES = 100
# The most values a column made categorical by --columns may have.
MAX_EXPLICIT_CATEGORIES = 1000


@dataclass(frozen=True)
class Column:
    """One modelled column: its name, kind and, for binary and categorical columns, its
    values in sorted order (JSON scalars: numbers, strings, booleans)."""

    name: str
    kind: str
    categories: tuple = ()

    @property
    def width(self) -> int:
        """How many entries of the encoded vector the column takes."""
        return len(self.categories) if self.kind == "categorical" else 1

    @property
    def layout(self) -> str:
        """The column as the table decoder sees it: ``real``, ``binary``, ``categorical:K``."""
        return f"categorical:{self.width}" if self.kind == "categorical" else self.kind

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.categories:
            d["categories"] = list(self.categories)
        return d


@dataclass(frozen=True)
class TableSchema:
    """The modelled columns of a table and how examples encode them."""

    columns: tuple[Column, ...]

    @property
    def layout(self) -> str:
        """The decoder's column layout, e.g. ``"real,real,binary,categorical:3"``: the value
        of the ``table_columns`` option of a table decoder."""
        return ",".join(c.layout for c in self.columns)

    @property
    def dim(self) -> int:
        """D, the length of an encoded example."""
        return sum(c.width for c in self.columns)

    def real_mask(self) -> np.ndarray:
        """``(D,)`` bool: which entries of an encoded example are real columns."""
        return np.concatenate([np.full(c.width, c.kind == "real") for c in self.columns])

    def encode(self, frame) -> np.ndarray:
        """The rows of ``frame`` (a pandas DataFrame holding these columns) as ``(N, D)``
        float32.

        Raises:
            DataError: a value that is not one of a binary or categorical column's values.
        """
        parts = []
        for c in self.columns:
            s = frame[c.name]
            if c.kind == "real":
                parts.append(s.to_numpy(dtype=np.float64)[:, None])
                continue
            codes = _codes(s, c)
            if c.kind == "binary":
                parts.append(codes[:, None].astype(np.float64))
            else:
                parts.append(np.eye(c.width)[codes])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def decode(self, x: np.ndarray):
        """Encoded examples ``x: (N, D)`` back to a pandas DataFrame with the table's
        columns: real values as they are, a binary entry thresholded at 1/2, a categorical
        block's largest entry (one-hot draws and probabilities alike)."""
        import pandas as pd
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"encoded examples have {x.shape[1]} values; the schema needs "
                             f"{self.dim}")
        out, i = {}, 0
        for c in self.columns:
            block = x[:, i:i + c.width]
            i += c.width
            if c.kind == "real":
                out[c.name] = block[:, 0]
            else:
                idx = (block[:, 0] > 0.5).astype(int) if c.kind == "binary" \
                    else block.argmax(1)
                out[c.name] = pd.Series(np.asarray(c.categories, dtype=object)[idx])
                out[c.name] = out[c.name].infer_objects()
        return pd.DataFrame(out)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict) -> TableSchema:
        return cls(tuple(Column(c["name"], c["kind"], tuple(c.get("categories", ())))
                         for c in d["columns"]))


def _sorted_values(s) -> list:
    """The distinct values of a column, sorted (numbers numerically, others as strings),
    as JSON scalars."""
    values = s.unique().tolist()
    try:
        values = sorted(values)
    except TypeError:
        values = sorted(values, key=str)
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _codes(s, c: Column) -> np.ndarray:
    index = {v: i for i, v in enumerate(c.categories)}
    values = [v.item() if isinstance(v, np.generic) else v for v in s.tolist()]
    try:
        return np.array([index[v] for v in values], dtype=np.int64)
    except KeyError as e:
        raise DataError(f"column {c.name!r} holds the value {e.args[0]!r}, which is not one of "
                        f"its {len(c.categories)} values") from None


def _numeric(s) -> bool:
    import pandas as pd
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def infer_kind(s) -> str:
    """The kind of a column (a pandas Series without missing values):

    * booleans, or exactly two distinct values: ``binary``;
    * integers with at most :data:`MAX_INFERRED_INTEGER_CATEGORIES` distinct values, or
      non-numeric values (strings): ``categorical``;
    * other numbers: ``real``.

    Raises:
        DataError: a column with a single value, or non-numeric with more than
            :data:`MAX_CATEGORIES` distinct values.
    """
    import pandas as pd
    n = s.nunique()
    name = s.name
    if n < 2:
        raise DataError(f"column {name!r} holds one value ({s.iloc[0]!r}) in every row, which "
                        f"tells the model nothing; drop it with --columns {name}=drop")
    if n == 2 or pd.api.types.is_bool_dtype(s):
        return "binary"
    if _numeric(s):
        if pd.api.types.is_integer_dtype(s) and n <= MAX_INFERRED_INTEGER_CATEGORIES:
            return "categorical"
        return "real"
    if n > MAX_CATEGORIES:
        raise DataError(f"column {name!r} holds {n} distinct non-numeric values, too many for a "
                        f"categorical column (at most {MAX_CATEGORIES}); drop it with "
                        f"--columns {name}=drop")
    return "categorical"


def parse_column_kinds(text: str) -> dict[str, str]:
    """``"age=real,zip=drop"`` -> ``{"age": "real", "zip": "drop"}``.

    Raises:
        ConfigError: an entry without ``=``, or a kind that is not one of :data:`OVERRIDES`.
    """
    kinds: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, kind = entry.rpartition("=")
        if not sep or not name.strip():
            raise ConfigError(f"columns: {entry!r} is not NAME=KIND (KIND one of "
                              f"{', '.join(OVERRIDES)})")
        kind = kind.strip()
        if kind not in OVERRIDES:
            raise ConfigError(f"columns: the kind of {name.strip()!r} must be one of "
                              f"{', '.join(OVERRIDES)}; got {kind!r}")
        kinds[name.strip()] = kind
    return kinds


def read_table(path: str | os.PathLike):
    """A CSV (``.csv``, ``.tsv``: tab-separated) or Parquet (``.parquet``, ``.pq``) file as a
    pandas DataFrame.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: unreadable, empty, or Parquet without pyarrow installed.
    """
    import pandas as pd

    from .errors import DataNotFoundError
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            try:
                frame = pd.read_parquet(path)
            except ImportError:
                raise DataError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow, "
                                "or save the table as CSV") from None
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is not a readable table ({msg})") from None
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"{path} holds no rows or no columns")
    return frame


def load_table(path: str | os.PathLike, columns: str = "", label_column: str | None = None
               ) -> Dataset:
    """A table as a :class:`~vaekit.data.Dataset` of encoded rows ``(N, D)`` float32 (see the
    module's docstring), with :attr:`~vaekit.data.Dataset.table` its :class:`TableSchema`.

    Args:
        columns: kind overrides, ``"NAME=KIND,..."`` (KIND: real, binary, categorical, drop).
        label_column: a column to use as the labels instead of modelling it.

    Raises:
        DataNotFoundError: no such file.
        DataError: unreadable; a missing value (named by column and row); a column whose kind
            cannot be inferred or whose values do not fit the kind asked for.
        ConfigError: an override or label column that names no column.
    """
    path = Path(path).expanduser()
    frame = read_table(path)
    frame.columns = [str(c) for c in frame.columns]
    names = list(frame.columns)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path.name} has two columns named {dup!r}; rename one")
    overrides = parse_column_kinds(columns)
    for name in [*overrides, *([label_column] if label_column else [])]:
        if name not in frame.columns:
            raise ConfigError(f"{path.name} has no column {name!r}; its columns are "
                              f"{', '.join(names)}")
    kept = [n for n in names if overrides.get(n) != "drop" and n != label_column]
    if not kept:
        raise DataError(f"{path.name}: every column is dropped; nothing is left to model")
    for n in [*kept, *([label_column] if label_column else [])]:
        missing = frame[n].isna().to_numpy()
        if missing.any():
            raise DataError(
                f"{path.name}: column {n!r} has {int(missing.sum())} missing values (first in "
                f"row {int(np.argmax(missing)) + 1}); fill them in, drop those rows, or leave "
                f"the column out with --columns {n}=drop")
    schema = TableSchema(tuple(_column(frame[n], overrides.get(n)) for n in kept))
    x = schema.encode(frame)
    labels = label_names = None
    if label_column:
        values = _sorted_values(frame[label_column])
        labels = _codes(frame[label_column], Column(label_column, "categorical", tuple(values)))
        label_names = [str(v) for v in values]
    splits, ys = _split_array(x, labels)
    ys = ys or (None, None, None)
    real = schema.real_mask()
    return Dataset(path.name, *(_tensor(s) for s in splits), train_labels=_tensor(ys[0]),
                   valid_labels=_tensor(ys[1]), test_labels=_tensor(ys[2]),
                   label_names=label_names, table=schema, auto_standardize=bool(real.any()),
                   real_mask=_tensor(real))


def _column(s, override: str | None) -> Column:
    """The :class:`Column` of a series, of the kind asked for or inferred."""
    kind = override or infer_kind(s)
    name = s.name
    if kind == "real":
        if not _numeric(s):
            raise DataError(f"column {name!r} holds non-numeric values ({s.iloc[0]!r}, ...) and "
                            "cannot be real; make it categorical")
        if not np.isfinite(s.to_numpy(dtype=np.float64)).all():
            raise DataError(f"column {name!r} holds infinite values; remove them")
        return Column(name, "real")
    values = _sorted_values(s)
    if kind == "binary" and len(values) != 2:
        raise DataError(f"column {name!r} holds {len(values)} distinct values; a binary column "
                        "needs exactly 2 (make it categorical or real)")
    if kind == "categorical" and len(values) < 2:
        raise DataError(f"column {name!r} holds one value in every row; drop it with "
                        f"--columns {name}=drop")
    if kind == "categorical" and len(values) > MAX_EXPLICIT_CATEGORIES:
        raise DataError(f"column {name!r} holds {len(values)} distinct values, too many for a "
                        f"categorical column (at most {MAX_EXPLICIT_CATEGORIES}); make it real "
                        "or drop it")
    return Column(name, kind, tuple(values))


def is_table(path: str | os.PathLike) -> bool:
    """Whether a ``--data`` path names a table (by its suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


__all__ = ["KINDS", "Column", "TableSchema", "infer_kind", "is_table", "load_table",
           "parse_column_kinds", "read_table"]
