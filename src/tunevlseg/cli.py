"""`tunevlseg <command>`: the one entry point every workflow rule calls.

Each command takes paths and one JSON ``--settings`` object (the slice of the
config the rule passes as a param), so the rules hold no logic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


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


def cmd_pretrain(args) -> None:
    from .pretrain import pretrain_standin

    opts = _settings(args.settings)
    report = pretrain_standin(Path(args.prepared), Path(args.out), **opts)
    print(json.dumps(report, indent=1))


def cmd_tune(args) -> None:
    import torch

    from .tune import CellRunner, CellSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = CellSpec.from_dict(_settings(args.settings))
    CellRunner(spec, Path(args.prepared), Path(args.out)).run()


def cmd_aggregate(args) -> None:
    from .report.collect import load_best, load_trials
    from .report.figures import depth_correlations, plot_depth_vs_dice, plot_dice_heatmap
    from .report.tables import write_dice_tables
    from .jsonio import write_csv

    opts = _settings(args.settings)
    best = load_best([Path(p) for p in args.best])
    trials = load_trials([Path(p) for p in args.trials])
    write_dice_tables(best, Path(args.tables), datasets=opts.get("datasets"), rows=opts.get("rows"))
    figures = Path(args.figures)
    dpi = opts.get("dpi", 150)
    plot_dice_heatmap(best, figures / "dice_heatmap.png", dpi=dpi)
    plot_depth_vs_dice(trials, figures / "depth_vs_dice.png", dpi=dpi)
    write_csv(figures / "depth_vs_dice.csv", depth_correlations(trials))


def cmd_show_table(args) -> None:
    print(Path(args.path).read_text())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tunevlseg`` command."""
    parser = argparse.ArgumentParser(prog="tunevlseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in its raw layout")
    p.add_argument("--out", required=True)
    p.add_argument("--settings", required=True, help='JSON: {"kind", "n", "image_size", "seed", ...}')
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="split, resize and cache a raw dataset")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--settings", default="{}", help='JSON: {"seed", "split_fractions"}')
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="train the demo's stand-in model")
    p.add_argument("--prepared", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--settings", required=True)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("tune", help="run or resume the Optuna study of one cell")
    p.add_argument("--prepared", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--settings", required=True)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("aggregate", help="Dice tables and figures from finished cells")
    p.add_argument("--best", nargs="+", required=True)
    p.add_argument("--trials", nargs="+", required=True)
    p.add_argument("--tables", required=True, help="output prefix, e.g. results/tables/dice")
    p.add_argument("--figures", required=True, help="output folder for the figures")
    p.add_argument("--settings", default="{}")
    p.set_defaults(func=cmd_aggregate)

    from .data.cli import add_parser as add_data_parser

    add_data_parser(sub)

    p = sub.add_parser("show-table", help="print a table file")
    p.add_argument("path")
    p.set_defaults(func=cmd_show_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; expected errors print one clear line instead of a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        if args.verbose:
            raise
        print(f"tunevlseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
