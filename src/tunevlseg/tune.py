"""The Optuna study of one cell (model, method, dataset): resumable, failure-tolerant.

The study lives in a journal file inside the cell folder. That file is *not* a
declared Snakemake output, so it survives a failed or killed job: a rerun loads
the study, fails trials left RUNNING by the dead process, and continues until
``n_trials`` trials have completed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from .data.cache import PreparedSplit, manifest_hash
from .jsonio import write_csv, write_json
from .models.registry import load_adapter as load_model_adapter
from .prompts import METHODS, build_learner
from .provenance import environment
from .train.loop import TrainSettings, evaluate_test, make_loss, pick_device, summarize_rows, train_prompts, validate

log = logging.getLogger(__name__)
SEARCH_KEYS_NOT_METHOD = {"lr", "weight_decay"}


@dataclass
class CellSpec:
    """Everything one cell needs, as passed by the workflow (one JSON object)."""

    model: str
    method: str
    dataset: str
    weights: str
    model_options: dict = field(default_factory=dict)
    prompt_key: str = "p1"
    n_trials: int = 20
    seed: int = 0
    objective: str = "best_val_dice"
    n_startup_trials: int = 10
    max_failed_trials: int = 10
    n_ctx: int = 4
    init_text: str | None = "a photo of a"
    search: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict) -> "CellSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown cell settings: {sorted(unknown)}")
        return cls(**data)


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """Sample one value per entry of a search space written in the config's format."""
    params = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"])
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        else:
            raise ValueError(f"search space '{name}': unknown type '{kind}'")
    return params


def load_adapter(spec: CellSpec):
    """The frozen model of a cell, loaded through the public loading path."""
    return load_model_adapter(spec.model, spec.weights, spec.model_options)


def make_learner(spec: CellSpec, adapter, depth: int, hparams: dict):
    """Build the cell's learner; CoOp-like learners start from ``init_text`` when it tokenises to n words.

    A searched depth beyond what the model has (e.g. 11 on a 4-layer stand-in) is clamped;
    the depth actually used is what trials.csv records.
    """
    cls = METHODS[spec.method]
    kwargs = dict(hparams)
    if spec.method == "finetune":
        kwargs["model"] = adapter.model
    if "text" in cls.modalities and spec.init_text:
        kwargs["init_embeddings"] = adapter.token_embeddings_for(spec.init_text, spec.n_ctx)
    depth = min(depth, cls.max_depth(adapter.dims))
    return build_learner(spec.method, adapter.dims, depth=depth, n_ctx=spec.n_ctx, **kwargs)


class CellRunner:
    """Runs and summarises the study of one cell in ``out_dir``."""

    def __init__(self, spec: CellSpec, prepared_dir: Path, out_dir: Path):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.prepared_dir = Path(prepared_dir)
        self.splits = {s: PreparedSplit(self.prepared_dir, s, prompt_key=spec.prompt_key) for s in ("train", "val", "test")}
        TrainSettings.from_dict(spec.training)  # fail now, not once per trial, on a bad key
        self.device = pick_device(spec.device)
        self.adapter = load_adapter(spec).to(self.device)

    # ------------------------------------------------------------------ study
    def run(self) -> None:
        """Run (or resume) the cell and write trials.csv, best.json and provenance.json."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.method == "zeroshot":
            frame = self._zeroshot()
        else:
            frame = self._tune()
        self._write_outputs(frame)

    def _study(self) -> optuna.Study:
        storage = JournalStorage(JournalFileBackend(str(self.out_dir / "study.journal")))
        direction = "minimize" if self.spec.objective == "last_val_loss" else "maximize"
        name = f"{self.spec.model}.{self.spec.method}.{self.spec.dataset}"
        study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.warning("trial %d was left RUNNING by an interrupted job: marking it FAIL", stale.number)
            study.tell(stale.number, state=TrialState.FAIL)
        # Re-seed from the history length so a resumed study does not replay earlier suggestions.
        study.sampler = optuna.samplers.TPESampler(
            seed=self.spec.seed + len(study.trials), multivariate=True, n_startup_trials=self.spec.n_startup_trials
        )
        return study

    def _tune(self) -> pd.DataFrame:
        study = self._study()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        while True:
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if complete >= self.spec.n_trials:
                break
            if failed >= self.spec.max_failed_trials:
                raise RuntimeError(f"{self.out_dir}: {failed} trials failed (max_failed_trials); see the log")
            study.optimize(self._objective, n_trials=1, catch=(Exception,))
        return trials_frame(study, self.spec)

    def _objective(self, trial: optuna.Trial) -> float:
        started = time.perf_counter()
        params = {**self.spec.fixed, **suggest(trial, self.spec.search)}
        hparams = {k: v for k, v in params.items() if k not in SEARCH_KEYS_NOT_METHOD | {"depth"}}
        seed = self.spec.seed * 1000 + trial.number
        trial.set_user_attr("seed", seed)
        settings = TrainSettings.from_dict({**self.spec.training, "lr": params["lr"],
                                            "weight_decay": params.get("weight_decay", 0.0), "seed": seed})
        # fine-tuning changes the weights: every trial starts from a freshly loaded model
        adapter = load_adapter(self.spec).to(self.device) if self.spec.method == "finetune" else self.adapter
        learner = make_learner(self.spec, adapter, params.get("depth", 1), hparams)
        trial.set_user_attr("depth", learner.depth)
        trial.set_user_attr("n_trainable", sum(p.numel() for p in learner.parameters()))
        trial_dir = self.out_dir / "trials" / f"{trial.number:03d}"
        result = train_prompts(adapter, learner, self.splits["train"], self.splits["val"], settings,
                               trial_dir, self.device)
        rows = evaluate_test(adapter, learner, self.splits["test"], settings.batch_size, self.device,
                             settings.amp, checkpoint=trial_dir / "best.pt")
        write_csv(trial_dir / "test_metrics.csv", pd.DataFrame(rows))
        for key, value in {**summarize_rows(rows), "val_dice": result.best_val_dice,
                           "last_val_loss": result.last_val_loss, "best_epoch": result.best_epoch,
                           "epochs_run": result.epochs_run,
                           "duration_s": round(time.perf_counter() - started, 2)}.items():
            trial.set_user_attr(key, value)
        log.info("%s trial %d: depth %d, lr %.2g -> val Dice %.3f, test Dice %.3f (%.0f s)", self.out_dir,
                 trial.number, learner.depth, params["lr"], result.best_val_dice,
                 trial.user_attrs["test_dice_mean"], trial.user_attrs["duration_s"])
        return result.last_val_loss if self.spec.objective == "last_val_loss" else result.best_val_dice

    def _zeroshot(self) -> pd.DataFrame:
        started = time.perf_counter()
        learner = build_learner("zeroshot", self.adapter.dims, depth=0)
        settings = TrainSettings.from_dict(self.spec.training)
        val_loss, val_dice = validate(self.adapter, learner, self.splits["val"], make_loss(settings),
                                      settings.batch_size, self.device, settings.amp)
        rows = evaluate_test(self.adapter, learner, self.splits["test"], settings.batch_size, self.device, settings.amp)
        write_csv(self.out_dir / "trials" / "000" / "test_metrics.csv", pd.DataFrame(rows))
        row = dict(trial=0, state="COMPLETE", depth=0, lr=None, weight_decay=None, val_dice=val_dice,
                   last_val_loss=val_loss, seed=self.spec.seed, duration_s=round(time.perf_counter() - started, 2),
                   n_trainable=0, **summarize_rows(rows))
        return _with_cell_columns(pd.DataFrame([row]), self.spec)

    # ---------------------------------------------------------------- outputs
    def _write_outputs(self, frame: pd.DataFrame) -> None:
        best = best_row(frame, self.spec.objective)
        params_cols = [c for c in frame.columns if c.startswith("param_")]
        best_json = dict(model=self.spec.model, method=self.spec.method, dataset=self.spec.dataset,
                         trial=None, params={}, val_dice=None, test_dice_mean=None, test_dice_std=None,
                         test_iou_mean=None, test_iou_std=None, n_test=None)
        if best is not None:
            best_json.update(
                trial=int(best["trial"]),
                params={"depth": int(best["depth"]), "lr": best.get("lr"), "weight_decay": best.get("weight_decay"),
                        **{c[len("param_"):]: best[c] for c in params_cols}},
                **{k: best[k] for k in ("val_dice", "test_dice_mean", "test_dice_std", "test_iou_mean",
                                        "test_iou_std", "n_test")},
            )
        provenance = dict(cell=self.spec.__dict__, prepared_dir=str(self.prepared_dir),
                          manifest_sha256=manifest_hash(self.prepared_dir), device=str(self.device),
                          seeds=dict(study=self.spec.seed, trials=frame["seed"].dropna().astype(int).tolist()),
                          **environment())
        write_csv(self.out_dir / "trials.csv", frame)
        write_json(self.out_dir / "provenance.json", provenance)
        write_json(self.out_dir / "best.json", _plain(best_json))


def trials_frame(study: optuna.Study, spec: CellSpec) -> pd.DataFrame:
    """One row per trial: state, parameters (method-specific ones as ``param_*``) and metrics."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row = dict(trial=t.number, state=t.state.name, depth=attrs.get("depth", t.params.get("depth")),
                   lr=t.params.get("lr", spec.fixed.get("lr")),
                   weight_decay=t.params.get("weight_decay", spec.fixed.get("weight_decay")),
                   val_dice=attrs.get("val_dice"), last_val_loss=attrs.get("last_val_loss"),
                   test_dice_mean=attrs.get("test_dice_mean"), test_dice_std=attrs.get("test_dice_std"),
                   test_iou_mean=attrs.get("test_iou_mean"), test_iou_std=attrs.get("test_iou_std"),
                   n_test=attrs.get("n_test"), seed=attrs.get("seed"), duration_s=attrs.get("duration_s"),
                   best_epoch=attrs.get("best_epoch"), n_trainable=attrs.get("n_trainable"))
        for key, value in {**spec.fixed, **t.params}.items():
            if key not in SEARCH_KEYS_NOT_METHOD | {"depth"}:
                row[f"param_{key}"] = value
        rows.append(row)
    return _with_cell_columns(pd.DataFrame(rows), spec)


def best_row(frame: pd.DataFrame, objective: str = "best_val_dice") -> dict | None:
    """The selected trial: best validation Dice (or lowest last validation loss) among COMPLETE ones."""
    done = frame[frame["state"] == "COMPLETE"]
    if done.empty:
        return None
    key, ascending = ("last_val_loss", True) if objective == "last_val_loss" else ("val_dice", False)
    return done.sort_values([key, "trial"], ascending=[ascending, True]).iloc[0].to_dict()


def _with_cell_columns(frame: pd.DataFrame, spec: CellSpec) -> pd.DataFrame:
    frame.insert(0, "dataset", spec.dataset)
    frame.insert(0, "method", spec.method)
    frame.insert(0, "model", spec.model)
    return frame


def _plain(value):
    """numpy scalars → Python scalars for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value
