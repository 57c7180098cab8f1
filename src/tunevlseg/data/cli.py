"""`tunevlseg data <command>`: obtain, index, local, check and status of the datasets (called by rules/data.smk)."""

from __future__ import annotations

import json
from pathlib import Path


def _obtain(args) -> None:
    from .ingest import obtain

    info = obtain(args.source, Path(args.raw_dir), args.archive or None, args.out)
    print(json.dumps({k: info[k] for k in ("source", "root")}))


def _index(args) -> None:
    from .ingest import index_from_receipt

    print(json.dumps(index_from_receipt(Path(args.receipt), Path(args.out), args.threads)))


def _status(args) -> None:
    import yaml

    from .ingest import dataset_status

    path = Path(args.configfile)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    config = yaml.safe_load(path.read_text()) or {}
    if "datasets" not in config:
        raise KeyError(f"{path} has no 'datasets' section")
    results = Path(config.get("results", "results"))
    raw_dir = Path(config.get("raw_dir") or results / "raw")
    for name, cfg in config["datasets"].items():
        print(dataset_status(name, cfg or {}, results, raw_dir))


def _local(args) -> None:
    from .ingest import index_local

    print(json.dumps(index_local(args.dataset, json.loads(args.settings), Path(args.out))))


def _check(args) -> None:
    import sys

    import yaml

    from .check import check_config_data

    path = Path(args.configfile)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    config = yaml.safe_load(path.read_text()) or {}
    lines, problems = check_config_data(config, str(args.configfile), device=not args.no_device)
    for line in lines:
        print(line)
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in {args.configfile}; nothing was run")
    print(f"{args.configfile}: every dataset, weights path and the device are ready")


def add_parser(sub) -> None:
    """Register ``tunevlseg data {obtain,index,local,check,status}`` on the main CLI's subparsers."""
    data = sub.add_parser("data", help="real datasets: obtain (fetch or ingest), index, status")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("obtain", help="download (direct) or ingest (gated archive) and extract a registry dataset")
    p.add_argument("--source", required=True, help="registry id, e.g. kvasir")
    p.add_argument("--raw-dir", required=True, help="shared raw folder; files go to <raw-dir>/<source>/")
    p.add_argument("--archive", default="", help="override: the archive file, its folder, or an extracted copy")
    p.add_argument("--out", required=True, help="receipt JSON to write")
    p.set_defaults(func=_obtain)

    p = dsub.add_parser("index", help="read the extracted release into samples.csv")
    p.add_argument("--receipt", required=True, help="the obtain step's receipt JSON (where the release was extracted)")
    p.add_argument("--out", required=True, help="folder to write samples.csv to")
    p.add_argument("--threads", type=int, default=1, help="workers reading the release (default 1)")
    p.set_defaults(func=_index)

    p = dsub.add_parser("local", help="index a folder / datalist / nnunet dataset where it is (samples.csv)")
    p.add_argument("--dataset", required=True, help="the dataset's name in the config (for messages)")
    p.add_argument("--settings", required=True, help="its datasets.<name> entry as JSON")
    p.add_argument("--out", required=True, help="folder to write samples.csv to")
    p.set_defaults(func=_local)

    p = dsub.add_parser("check", help="check every configured dataset's files and masks, weights and device")
    p.add_argument("--configfile", default="config.yaml", help="workflow config naming the datasets (default config.yaml)")
    p.add_argument("--no-device", action="store_true", help="skip the device check (e.g. on a login node)")
    p.set_defaults(func=_check)

    p = dsub.add_parser("status", help="one line per configured dataset: missing / raw present / prepared")
    p.add_argument("--configfile", default="config.yaml", help="workflow config naming the datasets (default config.yaml)")
    p.set_defaults(func=_status)
