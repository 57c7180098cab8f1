"""Cells and where their files live: the grid, the results layout, a cell's file contract, its result record.

A *cell* is one (model, method, dataset) of the benchmark grid. This module is the single place that
names a cell's files — the workflow declares its outputs from it, ``tune`` writes them, the report
reads them. Plain Python (no torch): the Snakefile imports it at start.

Cell folder ``<results>/cells/<model>/<method>/<dataset>/``:

==========================  ===================================================================
``trials.csv``              one row per trial (declared output)
``best.json``               the selected trial: :class:`CellResult` (declared output)
``provenance.json``         the settings and code that produced the trials (declared output)
``study.journal``           the Optuna study (side file: survives a failed job, resumes it)
``study.lock``              taken while a worker decides which trial to run next
``study.journal.flock``     taken while a process appends to the journal (freed when it dies)
``trials/NNN/``             per trial: ``epochs.csv``, ``best.pt``, ``test_metrics.csv``,
                            ``examples.npz``; while it runs ``resume.pt`` and ``owner.lock``
                            (``best.pt`` of a method that trains the whole model: the
                            selected trial's only, once the study has moved past the others)
``workers/<i>.json``        marker of parallel worker i (``tuning.workers_per_cell`` > 1)
``fingerprint.json``        what the study's trials depend on (``tunevlseg.study``)
``seeds/<r>/``              replicate r of the best configuration: ``result.json`` and
                            ``test_metrics.csv`` (declared outputs), ``best.pt``, ``epochs.csv``;
                            r = 0 is the best trial itself (``tuning.final_seeds``); a failed
                            replicate's ``result.json`` says so, and ``failed/<a>.json`` keeps
                            the records of attempts that ``retry-failed`` set aside
``superseded/``             studies of earlier settings, moved aside, never mixed in
==========================  ===================================================================
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path

from .methods import METHODS
from .models.registry import supports

ROW_SEP = " · "
Cell = tuple[str, str, str]


# --------------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """The configured (model, method, dataset) cells and each dataset's domain."""

    models: tuple[str, ...]
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    domains: dict = field(default_factory=dict, hash=False)

    @classmethod
    def from_settings(cls, opts: dict) -> Grid:
        """Grid from a rule's settings (``models``, ``methods``, ``datasets``, optional ``domains``)."""
        missing = [k for k in ("models", "methods", "datasets") if not opts.get(k)]
        if missing:
            raise ValueError(f"report settings lack {', '.join(missing)} (the benchmark grid)")
        domains = {k: v for k, v in (opts.get("domains") or {}).items() if v}
        return cls(tuple(opts["models"]), tuple(opts["methods"]), tuple(opts["datasets"]), domains)

    def pairs(self) -> list[tuple[str, str]]:
        """(model, method) pairs the models can run (CRIS has no vision prompts), model-major."""
        return [(m, k) for m in self.models for k in self.methods if supports(m, k)]

    def skipped(self) -> list[tuple[str, str]]:
        """Configured (model, method) pairs the model cannot run."""
        return [(m, k) for m in self.models for k in self.methods if not supports(m, k)]

    def cells(self) -> list[Cell]:
        """Every runnable (model, method, dataset), model-major."""
        return [(m, k, d) for m, k in self.pairs() for d in self.datasets]

    def tuned_cells(self) -> list[Cell]:
        """Cells that have an Optuna study (every method but those the catalogue marks untuned)."""
        return [c for c in self.cells() if METHODS[c[1]].tuned]

    def rows(self) -> list[str]:
        """Row labels ``model · method`` in grid order."""
        return [row_label(m, k) for m, k in self.pairs()]


def row_label(model: str, method: str) -> str:
    """Row label of a (model, method) pair, e.g. ``"clipseg · coop"``."""
    return f"{model}{ROW_SEP}{method}"


# ------------------------------------------------------------------------------ results layout
@dataclass(frozen=True)
class Layout:
    """Where everything lives under the results folder (``results:`` in the config).

    Paths are strings built with ``/``, so Snakemake wildcards (``"{dataset}"``) pass through.
    """

    results: str

    def raw(self, dataset: str) -> str:
        return f"{self.results}/raw/{dataset}"

    def receipt(self, dataset: str) -> str:
        return f"{self.results}/sources/{dataset}.json"

    def index(self, dataset: str) -> str:
        return f"{self.results}/index/{dataset}"

    def prepared(self, dataset: str, size) -> str:
        return f"{self.results}/prepared/{dataset}/{size}"

    def pretrained(self, model: str) -> str:
        return f"{self.results}/pretrained/{model}-standin"

    def features(self, model: str, dataset: str, size) -> str:
        """Frozen-feature cache of ``model`` on the prepared ``dataset`` at ``size`` (``tunevlseg.features``)."""
        return f"{self.results}/features/{model}/{dataset}/{size}"

    def cell(self, model: str, method: str, dataset: str) -> CellFiles:
        return CellFiles(f"{self.results}/cells/{model}/{method}/{dataset}")

    def adapter(self, model: str, method: str, dataset: str) -> str:
        """The exported best adapter of a cell (``tunevlseg export``: ``adapter_config.json`` and
        ``adapter_model.safetensors``)."""
        return f"{self.results}/adapters/{model}/{method}/{dataset}"

    def tables(self) -> str:
        """Prefix of the Dice tables (``.csv``, ``.md``, ``.tex``)."""
        return f"{self.results}/tables/dice"

    def figures(self) -> str:
        return f"{self.results}/figures"

    def partial(self) -> Layout:
        """The partial report's own layout (tables and figures under ``<results>/partial``)."""
        return Layout(f"{self.results}/partial")

    def log(self, name: str) -> str:
        return f"{self.results}/logs/{name}.log"


@dataclass(frozen=True)
class CellFiles:
    """The files of one cell folder (see the module docstring)."""

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def trials_csv(self) -> str:
        return f"{self.root}/trials.csv"

    @property
    def best_json(self) -> str:
        return f"{self.root}/best.json"

    @property
    def provenance_json(self) -> str:
        return f"{self.root}/provenance.json"

    @property
    def journal(self) -> str:
        return f"{self.root}/study.journal"

    @property
    def study_lock(self) -> str:
        return f"{self.root}/study.lock"

    @property
    def fingerprint_json(self) -> str:
        """What the study's trials depend on (``tunevlseg.study``); a different one starts a fresh study."""
        return f"{self.root}/fingerprint.json"

    @property
    def superseded(self) -> str:
        """Studies of earlier settings, kept aside (``superseded/<time>-<fingerprint>/``)."""
        return f"{self.root}/superseded"

    def seed(self, replicate) -> SeedFiles:
        """Replicate ``r`` of the best configuration (r = 0 is the best trial itself)."""
        return SeedFiles(f"{self.root}/seeds/{replicate}")

    def worker_marker(self, worker) -> str:
        return f"{self.root}/workers/{worker}.json"

    def trial(self, number: int) -> TrialFiles:
        return TrialFiles(f"{self.root}/trials/{int(number):03d}")


@dataclass(frozen=True)
class TrialFiles:
    """The files of one trial folder ``trials/NNN``."""

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def epochs_csv(self) -> Path:
        return self.path / "epochs.csv"

    @property
    def checkpoint(self) -> Path:
        """Best-validation trainable parameters."""
        return self.path / "best.pt"

    @property
    def test_metrics(self) -> Path:
        """Per-image test Dice and IoU."""
        return self.path / "test_metrics.csv"

    @property
    def examples(self) -> Path:
        """Qualitative examples for the report (``tunevlseg.train.examples``)."""
        return self.path / "examples.npz"

    @property
    def resume(self) -> Path:
        """Full training state after the last finished epoch (only while the trial runs)."""
        return self.path / "resume.pt"

    @property
    def owner_lock(self) -> Path:
        return self.path / "owner.lock"


@dataclass(frozen=True)
class SeedFiles(TrialFiles):
    """The files of one seed replicate ``seeds/<r>``: a trial folder plus ``result.json`` (declared output)."""

    @property
    def result_json(self) -> str:
        return f"{self.root}/result.json"

    @property
    def test_metrics_csv(self) -> str:
        return f"{self.root}/test_metrics.csv"

    def failed_attempt(self, attempt: int) -> Path:
        """The record of failed attempt ``a`` of this replicate, set aside by ``tunevlseg retry-failed``."""
        return self.path / "failed" / f"{int(attempt)}.json"


def replicates_of(method: str, final_seeds: int) -> int:
    """Seed replicates a cell of ``method`` has: ``tuning.final_seeds`` (at least 1) for a tuned method, 1 for
    an untuned one (zero-shot is deterministic)."""
    return max(1, int(final_seeds)) if METHODS[method].tuned else 1


def checkpoints_kept(method: str, n_trials: int, final_seeds: int) -> int:
    """``best.pt`` files a finished cell keeps: every trial's and replicate's for a prompt method (kilobytes);
    the selected trial's and the replicates' for a method that trains the whole model (``tune`` releases the
    others: ``CellRunner.release_checkpoints``); none for an untuned method. For disk estimates."""
    spec = METHODS[method]
    if not spec.tuned:
        return 0
    replicates = replicates_of(method, final_seeds) - 1
    return 1 + replicates if spec.trains_model else n_trials + replicates


def cell_dir(results: str | Path, model: str, method: str, dataset: str) -> Path:
    """Folder of one cell: ``<results>/cells/<model>/<method>/<dataset>``."""
    return Layout(str(results)).cell(model, method, dataset).path


# ----------------------------------------------------------------------------- the result record
#: Metric keys of a cell result (null when the cell has no completed trial).
RESULT_METRICS = ("val_dice", "test_dice_mean", "test_dice_std", "test_iou_mean", "test_iou_std", "n_test")
#: Keys a best.json must have (the optional ones read as NaN when absent).
RESULT_REQUIRED = ("model", "method", "dataset", "trial", "val_dice", "test_dice_mean", "test_dice_std")


@dataclass
class CellResult:
    """``best.json``: the cell and its selected trial (by the study's objective), with its test metrics."""

    model: str
    method: str
    dataset: str
    trial: float | None = None  # null (NaN when read) for a cell without a completed trial
    params: dict = field(default_factory=dict)
    val_dice: float | None = None
    test_dice_mean: float | None = None
    test_dice_std: float | None = None
    test_iou_mean: float | None = None
    test_iou_std: float | None = None
    n_test: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, path: str | Path) -> CellResult:
        """Read and check a best.json (numbers as floats, null as NaN); ``ValueError`` naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read best.json ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: best.json must hold a JSON object, got {type(data).__name__}")
        missing = [k for k in RESULT_REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{path}: best.json is missing key(s) {', '.join(missing)}")
        for key in ("model", "method", "dataset"):
            if not isinstance(data[key], str) or not data[key]:
                raise ValueError(f"{path}: {key!r} must be a non-empty string, got {data[key]!r}")
        values = {k: _number(path, k, data.get(k)) for k in ("trial", *RESULT_METRICS)}
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{path}: 'params' must be an object or null, got {params!r}")
        return cls(model=data["model"], method=data["method"], dataset=data["dataset"], params=params, **values)

    @property
    def cell(self) -> Cell:
        return self.model, self.method, self.dataset


def _number(path: Path, key: str, value: object) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{path}: {key!r} must be a number or null, got {value!r}")
    return float(value)


__all__ = ["ROW_SEP", "RESULT_METRICS", "Cell", "CellFiles", "CellResult", "Grid", "Layout", "SeedFiles", "TrialFiles",
           "cell_dir", "checkpoints_kept", "replicates_of", "row_label"]
