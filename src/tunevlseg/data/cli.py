"""`tunevlseg data <command>`: obtain, index and status of the real datasets (called by rules/data.smk)."""

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


def add_parser(sub) -> None:
    """Register ``tunevlseg data {obtain,index,status}`` on the main CLI's subparsers."""
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

    p = dsub.add_parser("status", help="one line per configured dataset: missing / raw present / prepared")
    p.add_argument("--configfile", default="config.yaml", help="workflow config naming the datasets (default config.yaml)")
    p.set_defaults(func=_status)
