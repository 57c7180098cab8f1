"""The Optuna study of one cell (model, method, dataset): resumable, failure-tolerant, bound to its settings.

The study lives in a journal file inside the cell folder (or in the database given by
``storage``). That file is *not* a declared Snakemake output, so it survives a failed or
killed job: a rerun loads the study and continues until ``n_trials`` trials have completed.
The study belongs to a fingerprint of everything that determines its trials
(:mod:`tunevlseg.study`): a rerun with other settings moves the old study aside and starts afresh,
so ``trials.csv`` and ``provenance.json`` always describe the same trials.

Several processes ("workers", ``tuning.workers_per_cell``) may run one study at once. Each
trial is owned through an OS file lock on ``trials/NNN/owner.lock``, held while the trial
runs; the kernel releases it when the process dies, however it dies. A trial left RUNNING
whose lock is free was interrupted (kill -9, preemption, node failure): the next worker
*adopts* it — same trial number, same parameters and seed — and training continues from the
trial's last finished epoch (``resume.pt``). So a killed and rerun cell ends with the same
trials and numbers as an uninterrupted one. A trial whose process died
``max_trial_restarts`` times without a clean stop (a crash it causes itself, e.g. the kernel
OOM killer) is marked FAIL and replaced. Study-level decisions (adopt, or start a new trial
only while ``COMPLETE + RUNNING < n_trials``) are taken under ``study.lock``, so K workers
together complete exactly ``n_trials`` trials.

What a trial may fail with: a non-finite loss (``TrialFailed``) or CUDA running out of memory
— recorded as FAIL (with the error), the study goes on, at most ``max_failed_trials`` of them.
An environment fault (disk full, I/O error, permission) stops the job with a clear message and
leaves the trial resumable; anything else (a bug) stops the job with its traceback, the trial
resumable too.

Sampling is seeded per trial: the startup trials (``n_startup_trials``) take the points of a scrambled
Sobol sequence seeded by the study seed (:mod:`tunevlseg.sampling`: they spread over the space, and
trial k of every cell tries the same values: common random numbers); after them, trial k's joint
(multivariate TPE) draw comes from a sampler seeded with ``seed + k``, and each parameter's own draw
from one seeded by (seed, k, name), so a value never depends on which parameters were written before
a kill.
Trial numbers are unique across workers, so parallel workers never share a seed, and a
resumed study suggests what an uninterrupted one would have.

Seed replicates (``tuning.final_seeds``): replicate 0 is the study's best trial; replicates
r >= 1 retrain its configuration with training seed ``1000 * seed + 500 + r`` (one job each,
:func:`retrain_replicate`), each evaluated on the test split with per-image Dice and IoU. A
replicate refuses a study of other settings. One that fails (non-finite loss, CUDA OOM) is recorded
as failed in its ``result.json`` and counted missing by the report; ``tunevlseg retry-failed``
sets the attempt aside and the next run retrains it with the next seed of its stream
(:func:`replicate_seed`: + 1 000 000 per earlier attempt), recorded in its ``result.json``.

Disk: a method that trains the whole model keeps the full-model ``best.pt`` of the selected trial
and of the replicates only (:meth:`CellRunner.release_checkpoints`).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import time
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import torch
from filelock import FileLock, Timeout
from optuna.trial import TrialState

from . import preempt
from .cells import RESULT_METRICS, CellFiles, CellResult, SeedFiles, TrialFiles
from .data.cache import PreparedSplit, manifest_hash
from .jsonio import read_json, write_csv, write_json
from .methods import DEPTH_KEY, OPTIMISER_KEYS, get_method
from .models.registry import load_adapter as load_model_adapter
from .prompts import build_learner, learner_class
from .provenance import environment
from .sampling import SobolStartup
from .study import changed_keys, fingerprint, open_storage, read_fingerprint, supersede, weights_identity, \
    write_fingerprint
from .train.examples import save_examples
from .train.loop import (TrainSettings, TrialFailed, evaluate_test, make_loss, pick_device, summarize_rows,
                         train_prompts, validate)
from .train.pruning import EpochReporter, make_pruner

log = logging.getLogger(__name__)
#: Search keys that are not the learner's own hyper-parameters.
NOT_LEARNER_KEYS = {*OPTIMISER_KEYS, DEPTH_KEY}
#: States of a finished trial that count towards ``n_trials`` (a pruned trial is finished: train/pruning.py).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: What a trial may legitimately fail with; the study records it as FAIL and goes on. Anything else
#: (a programming error, a full disk) stops the job with its traceback and leaves the trial resumable.
TRIAL_ERRORS = (TrialFailed, torch.OutOfMemoryError)
#: OS errors that are the machine's fault, not the trial's: they stop the job instead of failing trials.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
#: How torch's zip writer reports a full disk (it raises RuntimeError, not OSError).
ENVIRONMENT_MESSAGES = ("No space left on device", "Disk quota exceeded", "unexpected pos",
                        "PytorchStreamWriter failed writing file")
#: Training seed of seed replicate r >= 1: ``1000 * seed + REPLICATE_SEED_OFFSET + r`` (trial k uses
#: ``1000 * seed + k``; studies have fewer than 500 trials).
REPLICATE_SEED_OFFSET = 500
#: A replicate's attempt a after failures set aside by ``retry-failed`` adds ``a * RETRY_SEED_STRIDE`` to its seed.
RETRY_SEED_STRIDE = 1_000_000


#: Bumped on purpose when what a study's settings mean changes. 2: Sobol startup trials and per-parameter
#: TPE seeds (tunevlseg.sampling); training settings hashed only where they differ from their defaults.
FINGERPRINT_VERSION = 2


class EnvironmentFault(RuntimeError):
    """The machine, not the trial, failed (disk full, I/O error, permission): stop, fix, rerun."""


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
    storage: str | None = None  # None: journal file in the cell folder; else an Optuna storage URL
    max_trial_restarts: int = 2
    pruner: str = "none"  # none | median | hyperband (tunevlseg.train.pruning)
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 2

    @classmethod
    def from_dict(cls, data: dict) -> CellSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown cell settings: {sorted(unknown)}")
        return cls(**data)

    def check_names(self) -> None:
        """Every searched or fixed name must be one the method accepts (a misspelt name fails here, once)."""
        if not get_method(self.method).tuned:  # no study: nothing is searched
            return
        accepted = get_method(self.method).accepted_search_keys()
        for part, values in (("search", self.search), ("fixed", self.fixed)):
            unknown = sorted(set(values) - set(accepted))
            if unknown:
                raise ValueError(f"methods.{self.method}.{part}: unknown hyper-parameter(s) {unknown}; "
                                 f"{self.method} accepts {list(accepted)}")

    def fingerprint_components(self, manifest_sha256: str) -> dict:
        """Everything that determines the cell's trials (``n_trials`` and run-only keys excluded).

        The fingerprint policy: training settings count only where they differ from their defaults
        (:meth:`TrainSettings.non_defaults`), so a setting added later with a default that keeps the old
        behaviour leaves finished studies valid; a change of meaning bumps :data:`FINGERPRINT_VERSION`,
        which supersedes every study made under another version.
        """
        training = TrainSettings.from_dict(self.training).non_defaults()
        return dict(version=FINGERPRINT_VERSION, model=self.model, method=self.method, dataset=self.dataset,
                    weights=weights_identity(self.weights), model_options=self.model_options,
                    prompt_key=self.prompt_key, seed=self.seed, objective=self.objective,
                    n_startup_trials=self.n_startup_trials, n_ctx=self.n_ctx, init_text=self.init_text,
                    search=self.search, fixed=self.fixed, training=training, manifest_sha256=manifest_sha256,
                    pruner=[self.pruner, self.pruner_startup_trials, self.pruner_warmup_epochs])


def suggest(trial: optuna.Trial, space: dict, before: Callable[[str], None] | None = None) -> dict:
    """Sample one value per entry of a search space written in the config's format (``before(name)`` is
    called before each one)."""
    params = {}
    for name, spec in space.items():
        if before is not None:
            before(name)
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
    cls = learner_class(spec.method)
    kwargs = dict(hparams)
    if get_method(spec.method).trains_model:
        kwargs["model"] = adapter.model
    if getattr(cls, "takes_init_text", False) and spec.init_text and kwargs.get("init_from_text", True):
        kwargs["init_embeddings"] = adapter.token_embeddings_for(spec.init_text, spec.n_ctx)
    depth = min(depth, cls.max_depth(adapter.dims))
    return build_learner(spec.method, adapter.dims, depth=depth, n_ctx=spec.n_ctx, **kwargs)


def environment_fault(err: BaseException) -> bool:
    """True for errors of the machine (disk full, I/O, permission), however torch wraps them."""
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in ENVIRONMENT_MESSAGES)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated on a GPU (reset per trial), the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CellRunner:
    """Runs and summarises the study of one cell in ``out_dir``."""

    def __init__(self, spec: CellSpec, prepared_dir: Path, out_dir: Path, features_dir: Path | None = None):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.files = CellFiles(str(self.out_dir))
        self.method = get_method(spec.method)
        spec.check_names()
        self.prepared_dir = Path(prepared_dir)
        self.splits = {s: PreparedSplit(self.prepared_dir, s, prompt_key=spec.prompt_key) for s in ("train", "val", "test")}
        TrainSettings.from_dict(spec.training)  # fail now, not once per trial, on a bad key
        self.device = pick_device(spec.device)
        self.adapter = load_adapter(spec).to(self.device)
        self.features = self._features(features_dir)
        self.ran: list[int] = []  # numbers of the trials this process finished (COMPLETE or FAIL)
        self._fingerprint: tuple[str, dict] | None = None

    def _features(self, folder: Path | None):
        """The frozen-feature cache the workflow passed (``--features``), checked against this cell."""
        if folder is None:
            return None
        from .features import FeatureCache

        if not self.method.frozen_image_side:
            raise ValueError(f"--features given for {self.spec.method}, whose image side is prompted or trained")
        cache = FeatureCache(folder, checksums=True)  # damaged or stale (other weights content): moved aside
        cache.check(self.spec.model, self.spec.weights, self.prepared_dir)
        training = TrainSettings.from_dict(self.spec.training)
        if (cache.views, cache.meta["dtype"]) != (training.cache_views, training.cache_dtype):
            raise ValueError(f"feature cache {folder} holds {cache.views} view(s) in {cache.meta['dtype']}, the cell "
                             f"asks for cache_views {training.cache_views}, cache_dtype {training.cache_dtype}")
        return cache

    def _split_features(self, split: str):
        return None if self.features is None else self.features.split(split)

    # ------------------------------------------------------------------ study
    def run(self, write_outputs: bool = True) -> pd.DataFrame:
        """Run (or resume) the cell; unless ``write_outputs`` is False (a parallel worker), write
        trials.csv, best.json, provenance.json and seed replicate 0. Returns the trials table."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        frame = self._tune() if self.method.tuned else self._evaluate_untuned()
        self.release_checkpoints(frame)  # also trials failed for their crashes, and cells of older versions
        if write_outputs:
            if self.method.tuned:
                self._check_complete(frame)
            self._write_outputs(frame)
        return frame

    def _check_complete(self, frame: pd.DataFrame) -> None:
        running = frame[frame["state"] == "RUNNING"]
        if len(running):  # only when another worker is still running them
            raise RuntimeError(f"{self.out_dir}: trials {running['trial'].tolist()} are still RUNNING in another "
                               "process; write the cell's outputs after every worker has finished")

    def fingerprint(self) -> tuple[str, dict]:
        """(digest, components) of this cell's settings, data and weights."""
        if self._fingerprint is None:
            components = self.spec.fingerprint_components(manifest_hash(self.prepared_dir))
            self._fingerprint = fingerprint(components), components
        return self._fingerprint

    def study_name(self) -> str:
        base = f"{self.spec.model}.{self.spec.method}.{self.spec.dataset}"
        # a database keeps the studies of earlier settings: the name tells them apart
        return base if self.spec.storage is None else f"{base}.{self.fingerprint()[0][:12]}"

    def _bind_study(self) -> None:
        """Under the study lock: keep the cell's study if it belongs to these settings, else move it aside."""
        digest, components = self.fingerprint()
        stored = read_fingerprint(self.files)
        has_study = Path(self.files.journal).exists() or (self.files.path / "trials").exists()
        if stored is not None and stored.get("fingerprint") != digest:
            changed = changed_keys(stored.get("components", {}), components)
            supersede(self.files, stored["fingerprint"], f"settings changed ({', '.join(changed) or 'fingerprint'})")
        elif stored is None and has_study:
            supersede(self.files, "unknown", "the study has no fingerprint (made by an older version)")
        if read_fingerprint(self.files) is None:
            write_fingerprint(self.files, digest, components, self.study_name())

    def _study(self) -> optuna.Study:
        direction = "minimize" if self.spec.objective == "last_val_loss" else "maximize"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pruner = make_pruner(self.spec.pruner, TrainSettings.from_dict(self.spec.training).epochs,
                             self.spec.pruner_startup_trials, self.spec.pruner_warmup_epochs)
        with FileLock(self.files.study_lock):
            self._bind_study()
            study = optuna.create_study(study_name=self.study_name(),
                                        storage=open_storage(self.spec.storage, self.out_dir),
                                        direction=direction, load_if_exists=True, pruner=pruner)
        self._reseed(study, 0)
        return study

    def _reseed(self, study: optuna.Study, trial_number: int, name: str | None = None) -> None:
        """Trial k's sampler: a startup trial takes point k of the seeded Sobol sequence
        (:mod:`tunevlseg.sampling`); later ones TPE seeded with ``seed + k``, or by (seed, k, name) for
        parameter ``name``'s own draw."""
        seed = self.spec.seed + trial_number if name is None else \
            zlib.crc32(f"{self.spec.seed}/{trial_number}/{name}".encode())
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=self.spec.n_startup_trials)
        study.sampler = SobolStartup(self.spec.seed, self.spec.n_startup_trials, tpe)

    def _tune(self) -> pd.DataFrame:
        """Run trials until the study has ``n_trials`` COMPLETE ones, or every remaining one is taken.

        Returns when the budget is complete, or when the trials still missing are RUNNING in
        other live workers (they finish them; the cell's finishing step then writes the outputs).
        """
        study = self._study()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        while True:
            preempt.check()
            with ExitStack() as owner:
                with FileLock(self.files.study_lock):
                    trial = self._next_trial(study, owner)
                if trial is None:
                    break
                self._run_trial(study, trial)
        return trials_frame(study, self.spec)

    def _counted_failures(self, study: optuna.Study, trials) -> list:
        forgiven = set(study.user_attrs.get("forgiven_failures", []))
        return [t for t in trials if t.state == TrialState.FAIL and t.number not in forgiven]

    def _next_trial(self, study: optuna.Study, owner: ExitStack) -> optuna.Trial | None:
        """Under the study lock: adopt an interrupted trial, or start a new one if the budget allows."""
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state in FINISHED for t in trials)
        if complete >= self.spec.n_trials:
            return None
        failed = self._counted_failures(study, trials)
        if len(failed) >= self.spec.max_failed_trials:
            last = failed[-1].user_attrs.get("error", "see the job's log")
            raise RuntimeError(
                f"{self.out_dir}: {len(failed)} trials failed (tuning.max_failed_trials = "
                f"{self.spec.max_failed_trials}); the last one: {last}. Fix the cause, then run "
                f"`tunevlseg retry-failed {self.out_dir}` (their failures stop counting; they stay in "
                "trials.csv as FAIL) and rerun; or raise tuning.max_failed_trials")
        running = [t for t in trials if t.state == TrialState.RUNNING]
        for frozen in running:
            lock = self._owner_lock(frozen.number)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a live worker runs it
            owner.callback(lock.release)
            crashes = frozen.user_attrs.get("crashes", 0) + (0 if frozen.user_attrs.get("preempted") else 1)
            if crashes > self.spec.max_trial_restarts:
                log.warning("trial %d: its process died %d times; marking it FAIL", frozen.number, crashes)
                study._storage.set_trial_user_attr(frozen._trial_id, "error", f"its process died {crashes} times")
                study.tell(frozen.number, state=TrialState.FAIL)
                return self._next_trial(study, owner)
            log.warning("trial %d was interrupted: resuming it (same parameters and seed)", frozen.number)
            self._reseed(study, frozen.number)
            trial = optuna.Trial(study, frozen._trial_id)
            trial.set_user_attr("crashes", crashes)
            trial.set_user_attr("preempted", False)
            return trial
        if complete + len(running) >= self.spec.n_trials:
            return None
        self._reseed(study, len(trials))
        trial = study.ask()
        lock = self._owner_lock(trial.number)
        lock.acquire(timeout=0)
        owner.callback(lock.release)
        return trial

    def _owner_lock(self, number: int) -> FileLock:
        path = self.files.trial(number).owner_lock
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path)

    def _run_trial(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Run one trial and record it: COMPLETE with its value, FAIL on a trial error; a stop signal, an
        environment fault or a bug leaves it RUNNING (resumable) and stops the job."""
        try:
            value = self._objective(trial)
        except (preempt.Preempted, KeyboardInterrupt):
            trial.set_user_attr("preempted", True)
            raise
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except Exception as err:
            if preempt.requested():  # an error caused by the stop signal (e.g. a killed DataLoader worker)
                trial.set_user_attr("preempted", True)
                raise preempt.Preempted(preempt.first_signal()) from err
            if environment_fault(err):
                try:  # a clean stop: not a crash of the trial (it may fail too, the disk being full)
                    trial.set_user_attr("preempted", True)
                except Exception:  # noqa: BLE001
                    pass
                raise EnvironmentFault(
                    f"{self.out_dir}: trial {trial.number} stopped by the machine, not by the trial: "
                    f"{type(err).__name__}: {err}. Free disk space or fix permissions, then rerun: the trial "
                    "resumes from its last saved epoch and no failure is counted") from err
            if not isinstance(err, TRIAL_ERRORS):
                raise
            log.warning("%s trial %d failed: %s: %s", self.out_dir, trial.number, type(err).__name__, err)
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
        self.ran.append(trial.number)
        self.files.trial(trial.number).resume.unlink(missing_ok=True)
        self.release_checkpoints(trials_frame(study, self.spec))

    def release_checkpoints(self, frame: pd.DataFrame) -> list[int]:
        """Delete the full-model ``best.pt`` of every finished trial the study has moved past (not the selected one).

        Only for a method that trains the whole model (hundreds of MB per trial); prompt checkpoints are
        kept. Safe at any time: the selected trial only ever changes to a newly finished one, so a released
        trial is never selected again; nothing reads a released checkpoint (a trial's test metrics and
        examples are written when it finishes, replicates retrain from ``best.json``). Returns the trials released.
        """
        if not self.method.trains_model or frame.empty:
            return []
        best = best_row(frame, self.spec.objective)
        keep = None if best is None else int(best["trial"])
        released = []
        for number, state in zip(frame["trial"], frame["state"], strict=True):
            checkpoint = self.files.trial(int(number)).checkpoint
            if state in ("COMPLETE", "PRUNED", "FAIL") and int(number) != keep and checkpoint.is_file():
                checkpoint.unlink()
                released.append(int(number))
        if released:
            log.info("%s: released the full-model checkpoints of trials %s (the selected trial is %s)", self.out_dir,
                     released, keep)
        return released

    def _objective(self, trial: optuna.Trial) -> float:
        # the joint draw first, by trial k's sampler (Optuna draws it lazily, at the first parameter not yet
        # written); then every other draw by its own sampler: a trial killed between two parameter writes
        # resumes with the very values an uninterrupted run writes
        _ = trial.relative_params
        params = {**self.spec.fixed,
                  **suggest(trial, self.spec.search, before=lambda name: self._reseed(trial.study, trial.number, name))}
        seed = self.spec.seed * 1000 + trial.number
        trial.set_user_attr("seed", seed)
        metrics = self.train_and_evaluate(params, seed, self.files.trial(trial.number), trial=trial)
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        log.info("%s trial %d: depth %d, lr %.2g -> val Dice %.3f, test Dice %.3f (%.0f s)", self.out_dir,
                 trial.number, metrics["depth"], params["lr"], metrics["val_dice"], metrics["test_dice_mean"],
                 metrics["duration_s"])
        return metrics["last_val_loss"] if self.spec.objective == "last_val_loss" else metrics["val_dice"]

    def train_and_evaluate(self, params: dict, seed: int, files: TrialFiles, trial: optuna.Trial | None = None) -> dict:
        """Train one configuration with ``seed`` in ``files`` (resumable), evaluate it on the test split.

        Writes ``epochs.csv``, ``best.pt``, ``test_metrics.csv`` (per image) and ``examples.npz``;
        returns the metrics and costs recorded for it. With the study's ``trial`` (not for seed
        replicates) each epoch's validation score is reported to its pruner.
        """
        started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        hparams = {k: v for k, v in params.items() if k not in NOT_LEARNER_KEYS}
        torch.manual_seed(seed)  # the learner's initialisation depends only on the seed
        settings = TrainSettings.from_dict({**self.spec.training, "lr": params["lr"],
                                            "weight_decay": params.get("weight_decay", 0.0), "seed": seed})
        # a method that trains the model changes its weights: every run starts from a freshly loaded model
        adapter = load_adapter(self.spec).to(self.device) if self.method.trains_model else self.adapter
        learner = make_learner(self.spec, adapter, params.get(DEPTH_KEY, 1), hparams)
        result = train_prompts(adapter, learner, self.splits["train"], self.splits["val"], settings,
                               files, self.device, features=self.features,
                               on_epoch=EpochReporter(trial, self.spec.objective) if trial is not None else None)
        if result.pruned:  # recorded PRUNED with what it reached; no test evaluation
            for key, value in {"val_dice": result.best_val_dice, "last_val_loss": result.last_val_loss,
                               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                               "duration_s": round(time.perf_counter() - started, 2)}.items():
                trial.set_user_attr(key, value)
            raise optuna.TrialPruned(f"pruned after epoch {result.history[-1]['epoch']}")
        rows = evaluate_test(adapter, learner, self.splits["test"], settings.batch_size, self.device,
                             settings.amp, checkpoint=files.checkpoint, features=self._split_features("test"),
                             workers=settings.num_workers)
        write_csv(files.test_metrics, pd.DataFrame(rows))
        # evaluate_test loaded best.pt into the learner: the report's qualitative panel shows these
        save_examples(adapter, learner, self.splits["test"], files.examples, device=self.device,
                      amp=settings.amp)
        return {"depth": learner.depth, "n_trainable": sum(p.numel() for p in learner.parameters()),
                **summarize_rows(rows), "val_dice": result.best_val_dice, "last_val_loss": result.last_val_loss,
                "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "duration_s": round(time.perf_counter() - started, 2),
                "peak_mem_mb": round(peak_memory_mb(self.device), 1)}

    def _evaluate_untuned(self) -> pd.DataFrame:
        """A method without a study (zero-shot): one evaluation of the frozen model, recorded as trial 0."""
        started = time.perf_counter()
        learner = build_learner(self.spec.method, self.adapter.dims, depth=0)
        settings = TrainSettings.from_dict(self.spec.training)
        val_loss, val_dice = validate(self.adapter, learner, self.splits["val"], make_loss(settings),
                                      settings.batch_size, self.device, settings.amp)
        rows = evaluate_test(self.adapter, learner, self.splits["test"], settings.batch_size, self.device, settings.amp)
        files = self.files.trial(0)
        write_csv(files.test_metrics, pd.DataFrame(rows))
        save_examples(self.adapter, learner, self.splits["test"], files.examples, device=self.device, amp=settings.amp)
        row = dict(trial=0, state="COMPLETE", depth=0, lr=None, weight_decay=None, val_dice=val_dice,
                   last_val_loss=val_loss, seed=self.spec.seed, duration_s=round(time.perf_counter() - started, 2),
                   n_trainable=0, peak_mem_mb=round(peak_memory_mb(self.device), 1), **summarize_rows(rows))
        return _with_cell_columns(pd.DataFrame([row]), self.spec)

    # ---------------------------------------------------------------- outputs
    def _provenance(self, **extra) -> dict:
        return dict(cell=self.spec.__dict__, prepared_dir=str(self.prepared_dir),
                    manifest_sha256=manifest_hash(self.prepared_dir), device=str(self.device),
                    cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                    fingerprint=self.fingerprint()[0] if self.method.tuned else None,
                    features=None if self.features is None else dict(folder=str(self.features.folder),
                                                                     dtype=self.features.meta["dtype"]),
                    **extra, **environment())

    def _write_outputs(self, frame: pd.DataFrame) -> None:
        best = best_row(frame, self.spec.objective)
        params_cols = [c for c in frame.columns if c.startswith("param_")]
        result = CellResult(self.spec.model, self.spec.method, self.spec.dataset)
        if best is not None:
            result = CellResult(
                self.spec.model, self.spec.method, self.spec.dataset, trial=int(best["trial"]),
                params={DEPTH_KEY: int(best["depth"]), "lr": best.get("lr"), "weight_decay": best.get("weight_decay"),
                        **{c[len("param_"):]: best[c] for c in params_cols}},
                **{k: best[k] for k in RESULT_METRICS},
            )
        provenance = self._provenance(
            seeds=dict(study=self.spec.seed, trials=frame["seed"].dropna().astype(int).tolist()))
        write_csv(Path(self.files.trials_csv), frame)
        write_json(Path(self.files.provenance_json), provenance)
        write_json(Path(self.files.best_json), _plain(result.to_dict()))
        self._write_replicate_zero(frame, best)

    def _write_replicate_zero(self, frame: pd.DataFrame, best: dict | None) -> None:
        """Seed replicate 0 is the selected trial itself: its per-image metrics and its record."""
        target = self.files.seed(0)
        target.path.mkdir(parents=True, exist_ok=True)
        if best is None:
            write_csv(Path(target.test_metrics_csv), pd.DataFrame(columns=["id", "dice", "iou"]))
            write_json(Path(target.result_json), {**self._cell_keys(), "replicate": 0, "trial": None, "seed": None})
            return
        source = self.files.trial(int(best["trial"]))
        with open(source.test_metrics) as src:
            write_csv(Path(target.test_metrics_csv), pd.read_csv(src))
        record = {k: _plain(best.get(k)) for k in ("trial", "seed", "depth", "n_trainable", "val_dice",
                                                   "test_dice_mean", "test_iou_mean", "duration_s",
                                                   "peak_mem_mb")}
        write_json(Path(target.result_json), {**self._cell_keys(), "replicate": 0, **record,
                                              "params": self._best_params(best),
                                              "fingerprint": self.fingerprint()[0] if self.method.tuned else None,
                                              "device": str(self.device)})

    def _cell_keys(self) -> dict:
        return {"model": self.spec.model, "method": self.spec.method, "dataset": self.spec.dataset}

    @staticmethod
    def _best_params(best: dict) -> dict:
        params = {"lr": best.get("lr"), "weight_decay": best.get("weight_decay")}
        if best.get("depth") and best.get("depth") == best.get("depth"):
            params[DEPTH_KEY] = int(best["depth"])
        params.update({c[len("param_"):]: v for c, v in best.items() if c.startswith("param_")})
        return _plain({k: v for k, v in params.items() if v is not None and v == v})

    # ---------------------------------------------------------------- seed replicates
    def retrain_replicate(self, replicate: int) -> dict:
        """Retrain the cell's best configuration with replicate ``replicate``'s seed; write ``seeds/<r>/``.

        Needs ``best.json`` (the finished study) and refuses a study made with other settings.
        Resumable: a killed replicate continues from its last epoch; a replicate of another
        configuration (the best trial changed) starts over. A replicate that fails (non-finite loss,
        CUDA out of memory) is finished too: its ``result.json`` records the failure (status
        ``failed``, the error, the seed) and it is not retrained until ``tunevlseg retry-failed``
        sets the attempt aside; the next attempt uses the next seed of its stream (:func:`replicate_seed`).
        """
        if replicate < 1:
            raise ValueError("replicate 0 is the best trial itself (written by `tunevlseg tune`)")
        self._check_study_settings()
        best = CellResult.read(self.files.best_json)
        if best.trial != best.trial:  # NaN: no completed trial
            raise RuntimeError(f"{self.files.best_json}: the cell has no completed trial to retrain")
        params = dict(best.params)
        params.setdefault("lr", self.spec.fixed.get("lr"))
        files = self.files.seed(replicate)
        key = {"params": params, "fingerprint": self.fingerprint()[0]}
        key_path = files.path / "key.json"
        if files.path.exists() and (not key_path.is_file() or
                                    {k: read_json(key_path).get(k) for k in key} != key):
            shutil.rmtree(files.path)  # a replicate of another configuration: start over
        files.path.mkdir(parents=True, exist_ok=True)
        if not key_path.is_file():
            write_json(key_path, key)
        elif Path(files.result_json).is_file():  # this very replicate is finished (or failed)
            return read_json(Path(files.result_json))
        earlier = replicate_failures(files)
        attempt = len(earlier)
        seed = replicate_seed(self.spec.seed, replicate, attempt)
        record = {**self._cell_keys(), "replicate": replicate, "trial": None, "seed": seed, "attempt": attempt,
                  "failed_seeds": [f.get("seed") for f in earlier]}
        started = time.perf_counter()
        # null: neither searched nor fixed (e.g. weight_decay), so the trials trained with the default
        train_params = {k: v for k, v in params.items() if v is not None}
        try:
            metrics = self.train_and_evaluate(train_params, seed, files)
        except TRIAL_ERRORS as err:
            if preempt.requested():  # an error caused by the stop signal: resumable, not a failure
                raise preempt.Preempted(preempt.first_signal()) from err
            return self._replicate_failed(files, {**record, "params": params, "fingerprint": key["fingerprint"]},
                                          err, started)
        record = {**record, "status": "ok", **metrics, "params": params, "fingerprint": key["fingerprint"],
                  "device": str(self.device)}
        write_json(Path(files.result_json), _plain(record))
        files.resume.unlink(missing_ok=True)
        return record

    def _check_study_settings(self) -> None:
        """A replicate retrains the study's own best configuration: refuse a study made with other settings."""
        stored = read_fingerprint(self.files)
        if stored is None:
            raise FileNotFoundError(f"{self.out_dir}: no study here ({self.files.fingerprint_json} missing); "
                                    "run `tunevlseg tune` for the cell first")
        digest, components = self.fingerprint()
        if stored.get("fingerprint") != digest:
            changed = changed_keys(stored.get("components", {}), components)
            raise ValueError(
                f"{self.out_dir}: the cell's study was made with other settings (changed: "
                f"{', '.join(changed) or 'fingerprint'}), so its best configuration is not these settings'; "
                "rerun the cell's `tunevlseg tune` first (it starts a fresh study; under Snakemake drop "
                "`--rerun-triggers mtime` or add `--forcerun tune`)")

    def _replicate_failed(self, files: SeedFiles, record: dict, err: BaseException, started: float) -> dict:
        """Record a failed replicate as finished (``status: failed``) with no per-image rows; say what to do."""
        error = f"{type(err).__name__}: {err}"[:500]
        following = replicate_seed(self.spec.seed, record["replicate"], record["attempt"] + 1)
        record = {**record, "status": "failed", "error": error, "next_seed": following,
                  "duration_s": round(time.perf_counter() - started, 2),
                  "peak_mem_mb": round(peak_memory_mb(self.device), 1), "device": str(self.device)}
        files.resume.unlink(missing_ok=True)  # the next attempt starts afresh, with its own seed
        write_csv(Path(files.test_metrics_csv), pd.DataFrame(columns=["id", "dice", "iou"]))
        write_json(Path(files.result_json), _plain(record))
        log.warning("%s: seed replicate %d (seed %d) failed: %s. Recorded in %s; the report counts the replicate "
                    "missing. To retrain it with the next seed of its stream (%d), run `tunevlseg retry-failed %s` "
                    "and rerun", self.out_dir, record["replicate"], record["seed"], error, files.result_json,
                    following, self.out_dir)
        return record


def replicate_seed(seed: int, replicate: int, attempt: int = 0) -> int:
    """Training seed of seed replicate ``replicate`` >= 1 of a study seeded ``seed``, at its ``attempt``-th try.

    ``1000 * seed + REPLICATE_SEED_OFFSET + replicate``, plus ``RETRY_SEED_STRIDE * attempt`` for an
    attempt after failures set aside by ``tunevlseg retry-failed`` (a deterministic failure would recur
    with the same seed). Never a seed of the study's trials (``1000 * seed + k``, k < 500).
    """
    return 1000 * seed + REPLICATE_SEED_OFFSET + replicate + RETRY_SEED_STRIDE * attempt


def replicate_failures(files: SeedFiles) -> list[dict]:
    """Records of a replicate's failed attempts set aside by ``retry-failed`` (``failed/<a>.json``), by attempt."""
    folder = files.failed_attempt(0).parent
    paths = sorted(folder.glob("*.json"), key=lambda p: int(p.stem)) if folder.is_dir() else []
    return [read_json(p) for p in paths if p.stem.isdigit()]


def retry_failed_replicates(cell_dir: Path) -> list[dict]:
    """Let a cell's failed seed replicates run again, each with the next seed of its stream.

    A failed replicate's ``result.json`` moves to ``seeds/<r>/failed/<attempt>.json`` and its outputs
    are removed, so the next run (Snakemake sees them missing) retrains it. Returns the failed records.
    """
    seeds = CellFiles(str(cell_dir)).path / "seeds"
    retried = []
    for folder in sorted((p for p in seeds.iterdir() if p.name.isdigit() and p.name != "0"),
                         key=lambda p: int(p.name)) if seeds.is_dir() else []:
        files = SeedFiles(str(folder))
        result = Path(files.result_json)
        record = read_json(result) if result.is_file() else {}
        if record.get("status") != "failed":
            continue
        write_json(files.failed_attempt(record.get("attempt", 0)), record)
        for path in (result, Path(files.test_metrics_csv), files.resume):  # result.json first: the job reruns
            path.unlink(missing_ok=True)
        retried.append(record)
    return retried


def retry_failed(cell_dir: Path, storage: str | None = None) -> list[int]:
    """Stop counting a cell's failed trials against ``max_failed_trials`` (they stay FAIL in trials.csv)."""
    files = CellFiles(str(cell_dir))
    stored = read_fingerprint(files)
    if stored is None:
        raise FileNotFoundError(f"{cell_dir}: no study here ({files.fingerprint_json} missing)")
    with FileLock(files.study_lock):
        study = optuna.load_study(study_name=stored["study_name"], storage=open_storage(storage, Path(cell_dir)))
        failed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        forgiven = sorted(set(study.user_attrs.get("forgiven_failures", [])) | set(failed))
        study.set_user_attr("forgiven_failures", forgiven)
    return failed


def load_cell_study(cell_dir: Path, storage: str | None = None) -> optuna.Study:
    """The study of a cell folder (read through its fingerprint's study name)."""
    stored = read_fingerprint(CellFiles(str(cell_dir)))
    if stored is None:
        raise FileNotFoundError(f"{cell_dir}: no study here (fingerprint.json missing)")
    return optuna.load_study(study_name=stored["study_name"], storage=open_storage(storage, Path(cell_dir)))


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
                   best_epoch=attrs.get("best_epoch"), epochs_run=attrs.get("epochs_run"),
                   n_trainable=attrs.get("n_trainable"), peak_mem_mb=attrs.get("peak_mem_mb"),
                   error=attrs.get("error"))
        for key, value in {**spec.fixed, **t.params}.items():
            if key not in NOT_LEARNER_KEYS:
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
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


__all__ = ["CellRunner", "CellSpec", "EnvironmentFault", "REPLICATE_SEED_OFFSET", "RETRY_SEED_STRIDE", "best_row",
           "load_cell_study", "make_learner", "read_json", "replicate_failures", "replicate_seed", "retry_failed",
           "retry_failed_replicates", "suggest", "trials_frame"]
