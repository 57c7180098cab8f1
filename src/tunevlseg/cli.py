"""`tunevlseg <command>`: the one entry point every workflow rule calls.

Each command takes paths and one JSON ``--settings`` object (the slice of the
config the rule passes as a param), so the rules hold no logic.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import sys
import traceback
from pathlib import Path

from . import __version__


PREPARED_HELP = "prepared dataset folder (the prepare rule's output)"
THREADS_HELP = "torch intra-op threads (0 = torch's default)"
CELL_SETTINGS_HELP = "JSON: the cell's settings (model, method, dataset, search, training, ...; the workflow passes them)"


def _settings(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--settings is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError("--settings must be a JSON object")
    return value


def cmd_synth(args) -> None:
    from .data.synthetic import write_synthetic
    from .data.atomic import atomic_dir

    opts = _settings(args.settings)
    with atomic_dir(Path(args.out)) as tmp:
        write_synthetic(opts.pop("kind"), tmp, n=opts.pop("n"), image_size=opts.pop("image_size"),
                        seed=opts.pop("seed", 0), **opts)


def cmd_prepare(args) -> None:
    from .data.prepare import prepare_dataset

    opts = _settings(args.settings)
    meta = prepare_dataset(Path(args.raw), Path(args.out), size=args.size, workers=args.threads, **opts)
    print(json.dumps(meta.get("split_sizes", {})))


def _claim_compute(device: str, threads: int) -> None:
    """Claim one free GPU before torch touches CUDA (one per job), then set torch's intra-op threads (0: default)."""
    from .gpu_slots import claim_gpu

    claim_gpu(device)
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_pretrain(args) -> None:
    opts = _settings(args.settings)
    _claim_compute(opts.get("device", "auto"), args.threads)
    from .pretrain import pretrain_standin

    report = pretrain_standin(Path(args.prepared), Path(args.out), **opts)
    print(json.dumps(report, indent=1))


def _cell_runner(args):
    """The cell's runner from --settings/--prepared/--out (claims a free GPU before torch touches CUDA)."""
    spec_values = _settings(args.settings)
    _claim_compute(spec_values.get("device", "auto"), args.threads)
    from .tune import CellRunner, CellSpec

    spec = CellSpec.from_dict(spec_values)
    if args.storage:
        spec.storage = args.storage
    features = Path(args.features) if getattr(args, "features", None) else None
    return CellRunner(spec, Path(args.prepared), Path(args.out), features)


def cmd_tune(args) -> None:
    from .jsonio import write_json
    from .preempt import stop_on_signals

    with stop_on_signals():  # SIGTERM/SIGUSR1/SIGINT: stop after the current batch, state kept for the rerun
        runner = _cell_runner(args)
        frame = runner.run(write_outputs=args.worker is None)
    if args.worker is not None and args.marker:
        states = frame["state"].value_counts().to_dict()
        write_json(Path(args.marker), {"worker": args.worker, "ran": runner.ran, "study": states})


def cmd_retrain(args) -> None:
    from .preempt import stop_on_signals

    with stop_on_signals():
        record = _cell_runner(args).retrain_replicate(args.replicate)
    print(json.dumps({k: record[k] for k in ("replicate", "seed", "status", "test_dice_mean", "error") if k in record}))


def cmd_retry_failed(args) -> None:
    from .tune import retry_failed, retry_failed_replicates

    failed = retry_failed(Path(args.cell), args.storage)
    print(f"{args.cell}: {len(failed)} failed trial(s) no longer count against max_failed_trials: {failed}")
    for record in retry_failed_replicates(Path(args.cell)):
        print(f"{args.cell}: seed replicate {record['replicate']} (seed {record['seed']}: {record.get('error')}) "
              f"set aside; the next run retrains it with seed {record.get('next_seed')}")
    print("rerun the workflow")


def cmd_features(args) -> None:
    opts = _settings(args.settings)
    _claim_compute(opts.get("device", "auto"), args.threads)
    from .features import build_features
    from .models.registry import load_adapter
    from .train.loop import pick_device

    unknown = sorted(set(opts) - {"model", "weights", "model_options", "dtype", "views", "seed", "batch_size",
                                  "device", "amp"})
    if unknown:
        raise ValueError(f"features: unknown settings {unknown}")
    adapter = load_adapter(opts["model"], opts["weights"], opts.get("model_options"))
    meta = build_features(adapter, Path(args.prepared), Path(args.out), model=opts["model"], weights=opts["weights"],
                          model_options=opts.get("model_options"), dtype=opts.get("dtype", "float16"),
                          views=opts.get("views", 0), seed=opts.get("seed", 0), batch_size=opts.get("batch_size", 32),
                          device=pick_device(opts.get("device", "auto")), amp=opts.get("amp", True))
    print(json.dumps({k: meta[k] for k in ("splits", "bytes", "seconds")}))


def _int_in(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high`` (argparse names the option and the range)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def cmd_estimate(args) -> None:
    from .estimate import estimate_from_config

    estimate_from_config([Path(p) for p in args.configfile], steps=args.steps, device=args.device, batch_size=args.batch_size,
                         samples=args.samples)


def _report_grid(opts: dict, best_paths: list[Path] | None = None):
    """The grid from ``--settings`` (models, methods, datasets, domains), else from the best.json files."""
    from .report.collect import load_best
    from .cells import Grid

    if any(k in opts for k in ("models", "methods", "datasets")) or best_paths is None:
        return Grid.from_settings(opts)
    best = load_best(best_paths)
    unique = lambda col: tuple(dict.fromkeys(best[col]))  # noqa: E731 (first-seen order)
    return Grid(unique("model"), unique("method"), tuple(sorted(set(best["dataset"]))), opts.get("domains") or {})


def cmd_aggregate(args) -> None:
    from .report.collect import (CELL_KEYS, load_best, load_cost, load_per_image, load_trials, replicate_counts,
                                 replicate_results)
    from .report.render import render_report
    from .report.stats import UNSTABLE_SPREAD

    opts = _settings(args.settings)
    best_paths = [Path(p) for p in args.best]
    best = load_best(best_paths)  # fails naming a malformed file before anything is written
    cells = {tuple(row[k] for k in CELL_KEYS): path.parent
             for (_, row), path in zip(best.iterrows(), best_paths, strict=True)}
    grid = _report_grid(opts, best_paths)
    trial_files = [Path(p) for p in args.trials] if args.trials else [Path(p) / "trials.csv" for p in cells.values()]
    replicates = [Path(p) for p in args.replicates] if args.replicates else replicate_results(cells)
    # cells made before seed replicates existed have none: their best.json numbers are reported
    per_image = load_per_image(replicates, opts.get("unit", "volume")) if replicates else None
    cost = load_cost(load_trials(trial_files), replicates) if replicates else None
    seeds = replicate_counts(cells, replicates, opts.get("final_seeds")) if replicates else None
    render_report(grid, cells, Path(args.tables), Path(args.figures), dpi=opts.get("dpi", 150),
                  unstable_spread=opts.get("unstable_spread", UNSTABLE_SPREAD),
                  trial_files=trial_files, per_image=per_image, cost=cost, workers=args.threads, seeds=seeds)


def _config_settings(path: Path) -> dict:
    """Report settings (grid, domains, dpi) and the results folder from a workflow config file."""
    import yaml

    from .config import report_settings

    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = yaml.safe_load(path.read_text()) or {}
    bench = cfg.get("benchmark")
    if not isinstance(bench, dict) or not all(bench.get(k) for k in ("models", "methods", "datasets")):
        raise ValueError(f"{path}: no benchmark section (models, methods, datasets)")
    return {**report_settings(cfg), "results": cfg.get("results", "results")}


def cmd_report(args) -> None:
    from .cells import cell_dir
    from .report.collect import load_cost, load_per_image, load_trials, replicate_counts, replicate_results
    from .report.render import find_cells, render_report
    from .report.stats import UNSTABLE_SPREAD

    opts = _config_settings(Path(args.config)) if args.config else {}
    opts.update(_settings(args.settings))
    if not (args.config or args.settings != "{}"):
        raise ValueError("give the grid with --config config.yaml or --settings JSON")
    grid = _report_grid(opts)
    results = Path(args.results or opts.get("results", "results"))
    out = results / "partial"
    tables = Path(args.tables) if args.tables else out / "tables" / "dice"
    figures = Path(args.figures) if args.figures else out / "figures"
    cells = find_cells(results, grid, partial=args.partial)
    study_dirs = {c: cell_dir(results, *c) for c in grid.tuned_cells()}
    replicates = replicate_results(cells)
    trials = load_trials([Path(p) / "trials.csv" for p in cells.values()])
    render_report(grid, cells, tables, figures, dpi=opts.get("dpi", 150), study_dirs=study_dirs,
                  unstable_spread=opts.get("unstable_spread", UNSTABLE_SPREAD),
                  per_image=load_per_image(replicates, opts.get("unit", "volume")) if replicates else None,
                  cost=load_cost(trials, replicates) if replicates else None, workers=args.threads,
                  seeds=replicate_counts(cells, replicates, opts.get("final_seeds")) if replicates else None,
                  partial=args.partial)
    print(f"{len(cells)}/{len(grid.cells())} cells finished; tables {tables}.md, figures in {figures}")


def cmd_check_config(args) -> None:
    from .config import SCHEMA as schema
    from .config import check_config, check_required, effective_settings_lines, load_config_files, validate_schema

    # like `snakemake --configfile A.yaml B.yaml`: the files merged in order, checked as one config
    groups = [[p] for p in args.paths] if args.each else [args.paths]
    for paths in groups:
        name = " + ".join(map(str, paths))
        config = load_config_files(paths)
        if schema.is_file():
            check_required(config, name, schema)
            validate_schema(config, name, schema)
        check_config(_with_schema_defaults(config), name)
        print(f"{name}: ok")
        if args.show_effective:
            print(f"{name}: effective method settings (docs/how-to/configure.md: precedence)")
            print("\n".join(effective_settings_lines(config)))


def cmd_status(args) -> None:
    from .config import layout, load_workflow_config, make_grid
    from .progress import grid_status, status_lines

    config = load_workflow_config(args.configfile)
    results = args.results or layout(config).results
    tuning = config["tuning"]
    cells = grid_status(make_grid(config), results, tuning["n_trials"], tuning.get("final_seeds", 1))
    print("\n".join(status_lines(cells)))


def _with_schema_defaults(config: dict) -> dict:
    """The keys check_config reads that the schema gives defaults for."""
    out = dict(config)
    out.setdefault("results", "results")
    out.setdefault("methods", {})
    out.setdefault("tuning", {})
    return out


def cmd_show_table(args) -> None:
    print(Path(args.path).read_text())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tunevlseg`` command."""
    parser = argparse.ArgumentParser(prog="tunevlseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in its raw layout")
    p.add_argument("--out", required=True, help="folder to write (created whole, atomically)")
    p.add_argument("--settings", required=True, help='JSON: {"kind", "n", "image_size", "seed", ...}')
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="split, resize and cache a raw dataset")
    p.add_argument("--raw", required=True, help="raw dataset folder holding samples.csv (synth or data index output)")
    p.add_argument("--out", required=True, help="prepared dataset folder to write")
    p.add_argument("--size", type=int, required=True, help="side in pixels the images are resized to (the model's)")
    p.add_argument("--threads", type=int, default=1, help="processes decoding and resizing images (default 1)")
    p.add_argument("--settings", default="{}", help='JSON: {"seed", "split_fractions"}')
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="train the demo's stand-in model")
    p.add_argument("--prepared", required=True, help=PREPARED_HELP)
    p.add_argument("--out", required=True, help="stand-in model folder to write (what models.<m>.weights: standin loads)")
    p.add_argument("--settings", required=True, help='JSON: {"model", "seed", "device", "arch", "epochs", ...} '
                                                     "(models.<m>.standin)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("tune", help="run or resume the Optuna study of one cell")
    p.add_argument("--prepared", required=True, help=PREPARED_HELP)
    p.add_argument("--out", required=True, help="the cell folder (study journal, trials, best.json)")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--settings", required=True, help=CELL_SETTINGS_HELP)
    p.add_argument("--worker", type=int, default=None,
                   help="run as parallel worker I of the cell: trials only, no cell outputs")
    p.add_argument("--marker", default=None, help="with --worker: JSON file written when the worker is done")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: journal file in --out)")
    p.add_argument("--features", default=None, help="frozen-feature cache of the cell's model and dataset "
                                                    "(the features rule's output)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("retrain", help="retrain a cell's best configuration with seed replicate R (R >= 1)")
    p.add_argument("--prepared", required=True, help=PREPARED_HELP)
    p.add_argument("--out", required=True, help="the cell folder (holds best.json)")
    p.add_argument("--replicate", type=int, required=True,
                   help="seed replicate R: its own seed, derived from the config's seed and R")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--settings", required=True, help=CELL_SETTINGS_HELP)
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: journal file in --out)")
    p.add_argument("--features", default=None, help="frozen-feature cache of the cell's model and dataset")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("retry-failed", help="stop counting a cell's failed trials against max_failed_trials and "
                                            "let its failed seed replicates run again with their next seed")
    p.add_argument("cell", help="the cell folder, e.g. results/cells/clipseg/coop/kvasir")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: journal file in the cell)")
    p.set_defaults(func=cmd_retry_failed)

    p = sub.add_parser("features", help="compute a model's frozen image features of a prepared dataset once")
    p.add_argument("--prepared", required=True, help=PREPARED_HELP)
    p.add_argument("--out", required=True, help="feature cache folder to write")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--settings", required=True,
                   help='JSON: {"model", "weights", "model_options", "dtype", "views", "seed", "batch_size", '
                        '"device", "amp"}')
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("estimate", help="time a few steps per (model, method) and print what the grid costs")
    p.add_argument("--configfile", nargs="+", default=["config.yaml"],
                   help="workflow config file(s), merged in order as for snakemake --configfile (default config.yaml)")
    p.add_argument("--steps", type=_int_in(1, 1000), default=3,
                   help="timed training steps per (model, method) and path (1 to 1000)")
    p.add_argument("--device", default=None, help="default: the config's device")
    p.add_argument("--batch-size", type=_int_in(1, 4096), default=None,
                   help="batch used for timing (default: the configured one on a GPU, 2 on a CPU); "
                        "times are scaled per image")
    p.add_argument("--samples", action="append", default=[], metavar="DATASET=TRAIN,VAL,TEST",
                   help="sample counts of a dataset that is not prepared yet (overrides the built-in guess)")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("aggregate", help="Dice tables and figures from finished cells")
    p.add_argument("--best", nargs="+", required=True, help="best.json of every cell (its folder is read too)")
    p.add_argument("--trials", nargs="+", help="trials.csv files (default: next to each best.json)")
    p.add_argument("--replicates", nargs="+", help="seed replicates' result.json files (default: every "
                                                   "seeds/<r>/result.json next to each best.json)")
    p.add_argument("--tables", required=True, help="output prefix, e.g. results/tables/dice")
    p.add_argument("--figures", required=True, help="output folder for the figures")
    p.add_argument("--settings", default="{}", help='JSON: {"dpi", "models", "methods", "datasets", "domains", '
                                                    '"final_seeds"}')
    p.add_argument("--threads", type=int, default=1, help="processes drawing the per-cell Optuna figures and "
                                                          "qualitative panels beside this one (default 1: none)")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("report", help="tables and figures from the cells found under a results folder")
    p.add_argument("--partial", action="store_true",
                   help="report the finished cells and mark the others '—' (default: all must be finished)")
    p.add_argument("--config", help="workflow config (e.g. config.yaml) giving the grid, domains, dpi, results")
    p.add_argument("--settings", default="{}",
                   help='JSON: {"models", "methods", "datasets", "domains", "dpi", "final_seeds"}; overrides --config')
    p.add_argument("--results", help="results folder holding cells/<model>/<method>/<dataset> "
                                     "(default: the config's `results`, else results)")
    p.add_argument("--tables", help="output prefix (default: <results>/partial/tables/dice)")
    p.add_argument("--figures", help="output folder for the figures (default: <results>/partial/figures)")
    p.add_argument("--threads", type=int, default=1, help="processes drawing the per-cell Optuna figures and "
                                                          "qualitative panels beside this one (default 1: none)")
    p.set_defaults(func=cmd_report)
    from .data.cli import add_parser as add_data_parser

    add_data_parser(sub)

    _add_use_parsers(sub)

    p = sub.add_parser("check-config", help="check config files: YAML syntax (file and line), schema, cross-references")
    p.add_argument("paths", nargs="+", help="config files, merged in order as `snakemake --configfile A B` "
                                            "merges them, e.g. workflow/presets/paper.yaml workflow/presets/fast.yaml")
    p.add_argument("--each", action="store_true", help="check every file on its own instead of their merge")
    p.add_argument("--show-effective", action="store_true",
                   help="print each grid method's effective search, fixed and training settings and where each "
                        "value comes from (a config key, the method catalogue or the schema's default)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("status", help="per cell: trials done / planned, best validation Dice, running or not, ETA "
                                      "(reads the cell folders, writes nothing)")
    p.add_argument("--configfile", nargs="+", default=["config.yaml"],
                   help="workflow config file(s), merged in order as for snakemake --configfile (default config.yaml)")
    p.add_argument("--results", help="results folder (default: the config's `results`)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("show-table", help="print a table file")
    p.add_argument("path", help="the table, e.g. results/tables/dice.md")
    p.set_defaults(func=cmd_show_table)
    return parser


def cmd_export(args) -> None:
    from .export import export_cell

    config = export_cell(Path(args.cell), Path(args.out), replicate=args.replicate)
    print(f"{args.out}: {config['model']} · {config['method']} · {config['cell']['dataset']} (replicate "
          f"{args.replicate}, test Dice {config['cell']['test_dice_mean']:.4f})")


def cmd_predict(args) -> None:
    _claim_compute(args.device, args.threads)
    from .predict import predict_files

    mean = predict_files(args.adapter, args.input, args.out, masks=args.masks, weights=args.weights,
                         probabilities=args.probabilities, device=args.device, phrase=args.phrase,
                         batch_size=args.batch_size, label=args.label)
    if mean is not None:
        print(f"mean Dice {mean:.4f} ({Path(args.out) / 'metrics.csv'})")


def _add_use_parsers(sub) -> None:
    p = sub.add_parser("export", help="write a cell's tuned adapter (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("cell", help="the cell folder, e.g. results/cells/clipseg/coop/kvasir")
    p.add_argument("--out", required=True, help="the adapter folder to write")
    p.add_argument("--replicate", type=int, default=0, help="seed replicate (default 0: the study's best trial)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="masks for new images (or NIfTI volumes) with an exported adapter")
    p.add_argument("--adapter", required=True, help="an adapter folder written by `tunevlseg export`")
    p.add_argument("--input", required=True, help="a folder of images/volumes, or a quoted glob")
    p.add_argument("--out", required=True, help="output folder: <stem>.png (0/255) or <stem>.nii.gz per input")
    p.add_argument("--masks", default=None, help="folder of reference masks <stem>.*: writes metrics.csv")
    p.add_argument("--weights", default=None, help="base weights (default: the path recorded in the adapter)")
    p.add_argument("--probabilities", action="store_true", help="also write <stem>_prob.npy (float32)")
    p.add_argument("--phrase", default=None, help="class phrase (default: the tuned cell's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--label", type=int, default=None, help="target value in NIfTI label masks (default: non-zero)")
    p.set_defaults(func=cmd_predict)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; expected errors print one clear line instead of a traceback.

    With ``TUNEVLSEG_WARM=1`` a training command runs in a job process forked from a warm server
    (``tunevlseg.warm``: same output, status and signals, without ~8 s of imports).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from . import warm

    if warm.wants_warm(args.command, getattr(args, "settings", None)):
        status = warm.call(argv, command=args.command)
        if status is not None:
            return status
    return _run(args)


def run_local(argv: list[str], command: str | None = None) -> int:
    """Run the CLI in this process (what a warm job process calls; ``command``: the one argv must name)."""
    args = build_parser().parse_args(argv)
    if command is not None and args.command != command:
        print(f"tunevlseg: error: the warm job is {command!r} but its arguments name {args.command!r}", file=sys.stderr)
        return 2
    return _run(args)


#: Commands that train or encode with a model: they keep a running marker (tunevlseg.running).
MARKED_COMMANDS = ("tune", "retrain", "features", "pretrain")


def _running_marker(args):
    """The job's running marker (says on the rerun that this run was killed), or nothing."""
    from contextlib import nullcontext

    if args.command not in MARKED_COMMANDS:
        return nullcontext()
    from .running import marker_path, running_marker

    path = marker_path(args.command, args.out, getattr(args, "worker", None), getattr(args, "replicate", None))
    return running_marker(path, f"tunevlseg {args.command} --out {args.out}")


def _run(args) -> int:
    try:  # a fatal signal (e.g. SIGBUS on a memory-mapped file cut short) still logs a traceback
        faulthandler.enable()
    except (ValueError, OSError, RuntimeError):  # stderr without a file descriptor (captured)
        pass
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .preempt import Preempted

    try:
        with _running_marker(args):
            args.func(args)
    except Preempted as err:
        print(f"tunevlseg {args.command}: {err}: the interrupted trial's state is saved; rerun to resume",
              file=sys.stderr)
        return 128 + err.signum
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        if args.verbose:
            raise
        if not user_facing(err):  # a bug or an unexpected library error: its traceback goes to the job log
            traceback.print_exc(file=sys.stderr)
        print(f"tunevlseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


PACKAGE_DIR = Path(__file__).resolve().parent


def user_facing(err: BaseException) -> bool:
    """An error the project raised for the user to read (one line is enough), not a bug.

    The project's own checks raise with a message, inside ``tunevlseg``; an error raised inside a library
    (numpy's, torch's, a file the system could not open during a computation) or a ``KeyError`` of a bare key
    is not one of them, and its traceback is printed above the line.
    """
    if isinstance(err, FileNotFoundError):  # a path the user gave (or a file the workflow should have made)
        return True
    if isinstance(err, KeyError) and not (err.args and isinstance(err.args[0], str) and " " in err.args[0]):
        return False
    tb = err.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return True
    return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


if __name__ == "__main__":
    sys.exit(main())
