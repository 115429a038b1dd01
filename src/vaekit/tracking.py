"""Experiment tracking: where a run's metrics go besides ``metrics.jsonl`` and ``eval.json``.

One registry entry per backend (:data:`TRACKERS`, chosen with ``--tracking``):

* ``none``: nothing beyond the run directory's own files;
* ``tensorboard``: the per-epoch scalars as TensorBoard event files in ``RUN/tensorboard/``
  (tags ``bound/train``, ``valid/<score>``, ``lr``, ``monitor/L_<k>``); needs the
  ``tensorboard`` package (``pip install 'vaekit[tensorboard]'``);
* ``mlflow``: an MLflow run with the configuration as parameters (flattened: one per option,
  ``latent_dim``, ``objective``...), the same per-epoch metrics with the epoch as step, the
  final evaluation as ``test/<metric>`` and the figures as artifacts (``figures/``); needs
  ``pip install 'vaekit[mlflow]'``. The store is ``--tracking-uri`` (a server
  ``http://host:port``, ``sqlite:///path.db``, ...), else ``MLFLOW_TRACKING_URI``, else
  MLflow's own default in the working directory (``mlflow.db`` and ``mlruns/`` with MLflow 3:
  ``mlflow ui`` started there shows the runs); the URI is recorded resolved (absolute) in
  config.json. The MLflow run's id is kept in ``RUN/tracking.json``: ``--resume`` continues
  the same MLflow run.

``auto`` (the default) is ``tensorboard`` when the package is importable, else ``none``;
config.json records the backend chosen. Run directories written before tracking was an
option (no ``tracking`` field) load as ``auto``, i.e. as before.

No epoch is logged twice and none is lost: the trainer logs an epoch after its checkpoint is
written, and a resumed run first hands the tracker the epochs its checkpoint kept
(:meth:`Tracker.continue_after`), so that TensorBoard purges what came after them and MLflow
logs those it lacks (an epoch whose checkpoint was written just before a kill).

A backend is a :class:`Tracker` subclass registered with :func:`register_tracker`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, VaekitError, VaekitWarning
from .registry import Registry

TRACKING_FILE = "tracking.json"      # in a run directory: the MLflow run to continue
DEFAULT_EXPERIMENT = "vaekit"


class MissingPackageError(ConfigError):
    """A backend was asked for whose package is not installed (the CLI exits with 2)."""

    exit_code = 2


class TrackingError(VaekitError, RuntimeError):
    """The tracking store refused or could not be reached."""


@dataclass(frozen=True)
class Backend:
    """A registry entry: the tracker class, and the package it needs (import name, the pip
    extra that installs it and its name for messages)."""

    name: str
    tracker: type[Tracker]
    module: str | None = None
    extra: str | None = None
    label: str = ""

    def available(self) -> bool:
        """Whether the backend's package can be imported."""
        return self.module is None or _importable(self.module)

    def require(self) -> None:
        """Raise :class:`MissingPackageError` (one line with the fix) when the package is
        missing."""
        if not self.available():
            raise MissingPackageError(f"--tracking {self.name} needs {self.label}: "
                                      f"pip install 'vaekit[{self.extra}]'")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


TRACKERS: Registry[Backend] = Registry("tracking")


def register_tracker(name: str, *, module: str | None = None, extra: str | None = None,
                     label: str = "") -> Callable[[type], type]:
    """Class decorator: register a :class:`Tracker` subclass as backend ``name`` (needing
    ``module``, installed by ``pip install 'vaekit[extra]'``)."""
    def deco(cls: type) -> type:
        cls.name = name
        TRACKERS.register(name, Backend(name, cls, module, extra or module, label or name))
        return cls
    return deco


def tracking_choices() -> list[str]:
    """What ``--tracking`` takes: ``auto`` and the registered backends."""
    return ["auto", *TRACKERS.names()]


# --------------------------------------------------------------------------- metrics
def epoch_metrics(record: Mapping[str, Any], valid_name: str) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` record, by the tags TensorBoard has always shown:
    ``bound/train``, ``valid/<valid_name>``, ``lr`` and ``monitor/L_<k>``. Absent and
    ``None`` values are left out (an EM iteration has no validation score)."""
    out: dict[str, float] = {}
    if record.get("train_bound") is not None:
        out["bound/train"] = float(record["train_bound"])
    if record.get("valid_score") is not None:
        out["valid/" + valid_name] = float(record["valid_score"])
    if record.get("lr") is not None:
        out["lr"] = float(record["lr"])
    if record.get("monitor_log_likelihood") is not None:
        out[f"monitor/L_{record['monitor_num_samples']}"] = float(
            record["monitor_log_likelihood"])
    return out


# fields of eval.json that describe the evaluation rather than measure the model
_EVAL_CONTEXT = frozenset(("seed", "num_examples", "num_samples", "latent_dim", "seconds"))


def evaluation_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The measurements of an ``eval.json`` dict as ``<split>/<name>``
    (``test/log_likelihood``, ``test/elbo``, ``test/kl``, ``test/active_units``,
    ``test/bits_per_dim``, their ``*_se``...): finite numbers only (not flags, nor fields that
    are ``None`` for the family), without the evaluation's settings (seed, k, sizes, time)."""
    split = evaluation.get("split") or "test"
    return {f"{split}/{k}": float(v) for k, v in evaluation.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and k not in _EVAL_CONTEXT}


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A configuration dict (``Config.to_dict()``: sections of options, or one flat section)
    as ``option -> text``: names as the command line's options (``latent_dim``), lists as
    ``200,200``. Option names are unique across sections (the command line relies on it)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            for k, v in flat.items()}


# --------------------------------------------------------------------------- the interface
class Tracker:
    """A tracking backend for one run directory. The base class is the ``none`` backend:
    every method does nothing. Call order: :meth:`start`, :meth:`continue_after` (by the
    trainer, once it knows which epochs its checkpoint kept), :meth:`log_metrics` per epoch,
    :meth:`log_evaluation` and :meth:`log_artifact` after training, :meth:`close`.

    Args:
        settings: the run's :class:`~vaekit.config.TrainConfig` (``tracking_uri``,
            ``experiment``), prepared by :func:`prepare`.
    """

    name = "none"

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.last_step: int | None = None     # the last step logged (or known to be logged)

    def start(self, run_dir: Path, params: Mapping[str, Any], *, resume: bool) -> None:
        """Open the backend for ``run_dir``; ``params`` is the configuration (a
        ``Config.to_dict()`` or a flat dict); ``resume``: continue the run's earlier
        session."""

    def continue_after(self, history: Sequence[tuple[int, Mapping[str, float]]],
                       resume: bool) -> None:
        """Training (re)starts after ``history``, ``(step, metrics)`` of the epochs the
        checkpoint kept (empty for a new run): drop what was logged after them where the
        backend can, and log those of them that it lacks."""
        if history:
            self.last_step = history[-1][0]

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log one epoch's scalars (``epoch_metrics``) at ``step`` (the 1-based epoch)."""
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        self._log_metrics(metrics, step)

    def log_history(self, history: Sequence[Mapping[str, Any]], valid_name: str) -> None:
        """Log the records of ``history`` (``metrics.jsonl`` records) past :attr:`last_step`:
        those of a family that does not train through the trainer (EM iterations)."""
        for r in history:
            if self.last_step is None or r["epoch"] > self.last_step:
                self.log_metrics(epoch_metrics(r, valid_name), int(r["epoch"]))

    def log_evaluation(self, evaluation: Mapping[str, Any], step: int | None = None) -> None:
        """Log the final evaluation (an ``eval.json`` dict) at ``step`` (the epochs
        trained)."""

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Keep a file (a figure) with the run."""

    def close(self, status: str = "FINISHED") -> None:
        """End the session; ``status`` is ``FINISHED``, ``FAILED`` or ``KILLED``."""

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass


register_tracker("none")(Tracker)


@register_tracker("tensorboard", module="tensorboard", label="TensorBoard")
class TensorBoardTracker(Tracker):
    """Scalars in ``RUN/tensorboard/`` through ``torch.utils.tensorboard.SummaryWriter``; the
    evaluation and figures stay in the run directory only."""

    def start(self, run_dir, params, *, resume):
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = None

    def _open(self, purge_step: int | None) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def continue_after(self, history, resume):
        # Events at steps >= purge_step, of earlier sessions, are dropped by TensorBoard; the
        # last kept epoch is written again (it may have been lost in a kill).
        if not history and not resume:
            self._open(None)
            return
        self._open(history[-1][0] if history else 1)
        super().continue_after(history, resume)
        if history:
            self._log_metrics(history[-1][1], history[-1][0])

    def _log_metrics(self, metrics, step):
        self._open(None)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def close(self, status="FINISHED"):
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            self.writer = None


_MLFLOW_KEY = re.compile(r"[^\w\-. /:]")


def _mlflow_key(name: str) -> str:
    """An MLflow metric name for a tag (letters, digits, ``_-. /:``; others become ``_``)."""
    return _MLFLOW_KEY.sub("_", name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@register_tracker("mlflow", module="mlflow", label="MLflow")
class MLflowTracker(Tracker):
    """An MLflow run through ``mlflow.tracking.MlflowClient`` (no global MLflow state is
    touched: no active run, no global tracking URI)."""

    BATCH = 1000           # MLflow's limit of metrics per log_batch call

    def start(self, run_dir, params, *, resume):
        from mlflow.tracking import MlflowClient
        self.run_dir = Path(run_dir)
        uri = self.settings.tracking_uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            saved = _read_state(self.run_dir) if resume else None
            run = None
            if saved and saved.get("backend") == "mlflow" and saved.get("tracking_uri") == uri:
                run = self._existing_run(saved.get("run_id"))
            flat = flatten_params(params)
            if run is None:
                experiment_id = experiment_id_of(self.client, self.settings.experiment)
                run = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                             tags={"vaekit.run_dir": str(self.run_dir.resolve())})
                self._log_params(run.info.run_id, flat, {})
            else:
                self.client.update_run(run.info.run_id, status="RUNNING")
                self._log_params(run.info.run_id, flat, run.data.params)
        except VaekitError:
            raise
        except Exception as e:     # MlflowException, requests' errors, a refused file store
            raise TrackingError(f"MLflow at {uri} refused to start a run: {_first_line(e)}") \
                from None
        self.run_id = run.info.run_id
        self.broken = False
        from .io import write_json
        write_json(self.run_dir / TRACKING_FILE,
                   {"backend": "mlflow", "tracking_uri": uri,
                    "experiment_id": run.info.experiment_id, "run_id": self.run_id})

    def _existing_run(self, run_id: str | None):
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:            # deleted from the store, or never there
            return None
        return None if run.info.lifecycle_stage == "deleted" else run

    def _log_params(self, run_id: str, flat: Mapping[str, str],
                    existing: Mapping[str, str]) -> None:
        """Parameters not yet logged; MLflow refuses to change a parameter, so options
        changed on resume (``--epochs``, ``--lr``...) are recorded as ``resumed.<name>``
        tags."""
        from mlflow.entities import Param, RunTag
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        changed = [RunTag(f"resumed.{k}", v) for k, v in flat.items()
                   if k in existing and existing[k] != v]
        for i in range(0, max(len(new), len(changed)), 100):
            self.client.log_batch(run_id, params=new[i:i + 100], tags=changed[i:i + 100])

    def _batch(self, points: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), float(v), now, int(step))
                   for step, values in points for k, v in values.items()]
        for i in range(0, len(metrics), self.BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + self.BATCH])

    def _guarded(self, what: str, fn: Callable[[], None]) -> None:
        """Run ``fn``; a failure warns once and stops the logging of this session (training
        goes on; ``--resume`` logs the epochs missed)."""
        if self.broken:
            return
        try:
            fn()
        except Exception as e:
            self.broken = True
            warnings.warn(f"MLflow stopped accepting {what} ({_first_line(e)}); training goes "
                          "on, metrics.jsonl has every epoch, and --resume logs the ones "
                          "missed", VaekitWarning, stacklevel=3)

    def continue_after(self, history, resume):
        super().continue_after(history, resume)
        if not history:
            return

        def backfill():
            logged = {m.step for m in self.client.get_metric_history(self.run_id,
                                                                     "bound/train")}
            self._batch([(s, v) for s, v in history if s not in logged])
        self._guarded("the earlier epochs", backfill)

    def _log_metrics(self, metrics, step):
        self._guarded("metrics", lambda: self._batch([(step, metrics)]))

    def log_evaluation(self, evaluation, step=None):
        values = evaluation_metrics(evaluation)
        self._guarded("the evaluation", lambda: self._batch([(step or 0, values)]))

    def log_artifact(self, path):
        self._guarded("artifacts", lambda: self.client.log_artifact(
            self.run_id, str(path), artifact_path="figures"))

    def close(self, status="FINISHED"):
        if getattr(self, "run_id", None) is None:
            return
        with contextlib.suppress(Exception):
            self.client.set_terminated(self.run_id, status)


def experiment_id_of(client, name: str) -> str:
    """The id of experiment ``name``, created when it does not exist yet."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} is deleted; restore it "
                                "(mlflow experiments restore) or choose another --experiment")
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:               # created meanwhile by another run
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _read_state(run_dir: Path) -> dict | None:
    path = run_dir / TRACKING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------- preparation
def resolve_backend(name: str) -> str:
    """``auto`` -> ``tensorboard`` when importable, else ``none``; other names unchanged."""
    if name == "auto":
        return "tensorboard" if TRACKERS.get("tensorboard").available() else "none"
    return name


def prepare(train, run_dir: str | os.PathLike | None = None, *, resume: bool = False):
    """The trainer options with the tracking settings resolved and checked, before anything is
    written (what config.json records): ``auto`` resolved; the backend's package present;
    for MLflow the URI resolved (``--tracking-uri``, the run's ``tracking.json`` on resume,
    ``MLFLOW_TRACKING_URI``, MLflow's default) to an absolute one, the experiment named
    (``--experiment``, ``MLFLOW_EXPERIMENT_NAME``, ``vaekit``) and the store reached.

    Raises:
        MissingPackageError: the backend's package is not installed (exit status 2).
        ConfigError: ``--tracking-uri`` or ``--experiment`` without ``--tracking mlflow``.
        TrackingError: the MLflow store cannot be reached or refuses.
    """
    import dataclasses
    backend = TRACKERS.get(resolve_backend(train.tracking))
    backend.require()
    if backend.name != "mlflow":
        return dataclasses.replace(train, tracking=backend.name)
    uri = train.tracking_uri
    if uri is None and resume and run_dir is not None:
        saved = _read_state(Path(run_dir))
        uri = saved.get("tracking_uri") if saved else None
    uri = _absolute_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or _mlflow_default_uri())
    experiment = (train.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
                  or DEFAULT_EXPERIMENT)
    check_store(uri, experiment)
    return dataclasses.replace(train, tracking="mlflow", tracking_uri=uri,
                               experiment=experiment)


def _mlflow_default_uri() -> str:
    from mlflow.tracking import get_tracking_uri  # MLflow's own default (and env var)
    return get_tracking_uri()


def _absolute_uri(uri: str) -> str:
    """Local stores as absolute URIs (a run resumed from another directory finds its store):
    a plain path or ``file:`` path, and ``sqlite:///relative.db``."""
    if "://" not in uri and not uri.startswith(("file:", "sqlite:", "databricks")):
        return Path(uri).expanduser().resolve().as_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().resolve())
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return Path(uri[len("file:"):]).expanduser().resolve().as_uri()
    return uri


def check_store(uri: str, experiment: str, timeout: float = 5.0) -> None:
    """Fail early, in one line, when the MLflow store cannot be used: a server that does not
    answer (its ``/health``, within ``timeout`` seconds, rather than MLflow's minutes of
    retries), a store MLflow refuses, a deleted experiment.

    Raises:
        TrackingError: naming the URI and the fix.
    """
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            pass                     # it answers (a proxy without /health, or auth): go on
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(f"--tracking-uri {uri}: no MLflow server answers there "
                                f"({reason}); start it (mlflow server) or fix the address") \
                from None
    from mlflow.tracking import MlflowClient
    try:
        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception as e:
        raise TrackingError(f"--tracking-uri {uri}: MLflow cannot use this store "
                            f"({_first_line(e)})") from None
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {experiment!r} is deleted; restore it "
                            "(mlflow experiments restore) or choose another --experiment")


def check_settings(train) -> None:
    """The tracking fields of a :class:`~vaekit.config.TrainConfig` fit together.

    Raises:
        ConfigError: ``tracking_uri`` or ``experiment`` without ``tracking = mlflow``.
    """
    if train.tracking != "mlflow":
        for name in ("tracking_uri", "experiment"):
            if getattr(train, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} applies to MLflow; add "
                                  f"--tracking mlflow (tracking is {train.tracking})")


# --------------------------------------------------------------------------- sessions
_ACTIVE: dict[Path, Tracker] = {}


def status_of(error: BaseException | None) -> str:
    """How a session ended: ``FINISHED`` (no error), ``KILLED`` (Ctrl-C) or ``FAILED``."""
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def open_tracker(train, run_dir: str | os.PathLike | None, *,
                 params: Mapping[str, Any] | None = None, resume: bool = False) -> Tracker:
    """A started tracker of ``train.tracking`` (``auto`` resolved) for ``run_dir``; the
    ``none`` tracker without a run directory."""
    if run_dir is None:
        return Tracker(train)
    if train.tracking == "auto" or (train.tracking == "mlflow" and (
            train.tracking_uri is None or train.experiment is None)):
        train = prepare(train, run_dir, resume=resume)
    backend = TRACKERS.get(train.tracking)
    backend.require()
    tracker = backend.tracker(train)
    tracker.start(Path(run_dir), params if params is not None else train.to_dict(),
                  resume=resume)
    return tracker


def active(run_dir: str | os.PathLike | None) -> Tracker | None:
    """The tracker a :func:`session` holds open for ``run_dir``, else ``None``."""
    if run_dir is None:
        return None
    return _ACTIVE.get(Path(run_dir).resolve())


@contextlib.contextmanager
def session(train, run_dir: str | os.PathLike | None, *,
            params: Mapping[str, Any] | None = None, resume: bool = False) -> Iterator[Tracker]:
    """Hold a tracker open for ``run_dir`` while the block runs (the trainer inside it logs to
    it; ``runs.train_run`` then logs the evaluation and figures to the same one), closed at
    the end with status ``FINISHED``, ``FAILED`` (an exception) or ``KILLED`` (Ctrl-C). A
    session already open for ``run_dir`` is reused, not closed."""
    current = active(run_dir)
    if current is not None:
        yield current
        return
    tracker = open_tracker(train, run_dir, params=params, resume=resume)
    key = Path(run_dir).resolve() if run_dir is not None else None
    if key is not None:
        _ACTIVE[key] = tracker
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if key is not None:
            _ACTIVE.pop(key, None)
        tracker.close(status)
