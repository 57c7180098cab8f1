"""Real datasets: obtain the raw release (fetch or ingest), index it to samples.csv, report status.

Layout: ``<raw_dir>/<id>/`` holds the release files (downloaded, or dropped
there by the user for gated datasets) and ``<raw_dir>/<id>/extracted/<file
stem>/`` their safely extracted contents. ``obtain`` writes a small receipt
(JSON: where the extracted release is, the files' sha256) that ``index_dataset``
turns into the normalized index folder (``samples.csv`` + helper files) read
by :func:`tunevlseg.data.prepare.prepare_dataset`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from tunevlseg.data.atomic import atomic_dir, atomic_write
from tunevlseg.data.fetch import download, safe_extract, verify_file
from tunevlseg.data.local import PREPARE_KEYS, is_local, local_rows
from tunevlseg.data.prepare import REQUIRED_COLUMNS
from tunevlseg.data.registry import get_spec
from tunevlseg.data.spec import DatasetSpec

log = logging.getLogger(__name__)
OPTIONAL_COLUMNS = ["label", "transpose", "mask_rule", "split", "stratum", "context", "orient", "axis", "case",
                    "spacing"]
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar")


def _stem(name: str) -> str:
    for suffix in _ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _locate(spec: DatasetSpec, folder: Path, archive: str | None) -> tuple[list[Path], Path | None]:
    """The release files to extract (optional ones only when present), or an extracted folder given as ``archive``."""
    if archive:
        given = Path(archive)
        if given.is_file():
            if len(spec.required_files) > 1:
                raise ValueError(f"{spec.id}: archive {given} is one file but the release has "
                                 f"{[f.name for f in spec.files]}; point archive at the folder holding them")
            extra = [given.parent / f.name for f in spec.files if f.optional and (given.parent / f.name).is_file()]
            return [given, *extra], None
        if given.is_dir():
            if all((given / f.name).is_file() for f in spec.required_files):
                return [given / f.name for f in spec.files if (given / f.name).is_file()], None
            return [], given  # an already extracted copy (e.g. on shared storage)
        raise FileNotFoundError(f"{spec.id}: archive {given} (datasets.<name>.archive) does not exist. "
                                f"{spec.how_to_get(folder)}")
    missing = [f.name for f in spec.required_files if not (folder / f.name).is_file()]
    if missing and spec.access == "gated":
        raise FileNotFoundError(f"{spec.id}: missing {', '.join(missing)} in {folder}. {spec.how_to_get(folder)}")
    return [folder / f.name for f in spec.files if not f.optional or (folder / f.name).is_file()], None


def release_files(dataset_cfg: dict, raw_dir: str | os.PathLike) -> list[str]:
    """The gated release files ``obtain`` would read for one ``datasets.<name>`` entry (those that exist).

    The ``obtain`` rule declares them as inputs, so an archive replaced at the
    same path reruns obtain, index and prepare. Direct downloads (fetched by
    obtain itself, then checked against their sha256 on every run), synthetic
    datasets and an already extracted copy give ``[]``.
    """
    source = dataset_cfg.get("source", "synthetic")
    if source == "synthetic" or is_local(source) or get_spec(source).access != "gated":
        return []
    spec = get_spec(source)
    try:
        paths, _ = _locate(spec, Path(raw_dir) / spec.id, dataset_cfg.get("archive") or None)
    except (FileNotFoundError, ValueError):  # obtain itself reports what is missing, with the instructions
        return []
    return [str(p) for p in paths if p.is_file()]


def annotation_files(dataset_cfg: dict) -> list[str]:
    """The published annotation files of a ``datasets.<name>`` entry (``annotations:``), inputs of ``prepare``."""
    if not dataset_cfg.get("annotations"):
        return []
    from tunevlseg.data.published import annotation_files as files

    return [str(p) for p in files(dataset_cfg["annotations"]).values()]


def obtain(source: str, raw_dir: str | os.PathLike, archive: str | None = None,
           receipt: str | os.PathLike | None = None) -> dict:
    """Fetch (direct) or ingest (gated) one registry dataset and extract it; returns the receipt dict.

    Direct files are downloaded (resumable, sha256-checked) into
    ``<raw_dir>/<id>/``; gated files must already be there (or at
    ``archive``), else ``FileNotFoundError`` tells the user what to get and
    where to put it. Every file already present is verified on every run
    against its expected sha256 (the registry's, else ``<file>.sha256`` next
    to it): a mismatch is a ``ValueError`` naming the file and both hashes.
    Each archive is extracted once (its sha256 is recorded next to the
    extraction and a changed archive is extracted again).
    ``receipt``, when given, is written atomically.
    """
    spec = get_spec(source)
    folder = Path(raw_dir) / spec.id
    paths, extracted_root = _locate(spec, folder, archive)
    files = []
    if extracted_root is None:
        extracted_root = folder / "extracted"
        by_name = {f.name: f for f in spec.files}
        for path in paths:
            f = by_name.get(path.name)
            if spec.access == "direct" and not path.is_file():
                digest = download(f.url, path, f.sha256)
            else:
                digest = verify_file(path, f.sha256 if f is not None else None)
            files.append({"name": path.name, "path": str(path), "sha256": digest, "bytes": path.stat().st_size})
            target = extracted_root / _stem(path.name)
            record = extracted_root / f"{_stem(path.name)}.sha256"
            if not (target.is_dir() and record.is_file() and record.read_text().strip() == digest):
                log.info("extracting %s to %s", path, target)
                safe_extract(path, target)
                with atomic_write(record) as tmp:
                    tmp.write_text(digest + "\n")
    out = {"source": spec.id, "access": spec.access, "root": str(Path(extracted_root).resolve()), "files": files}
    if receipt is not None:
        with atomic_write(receipt) as tmp:
            tmp.write_text(json.dumps(out, indent=1) + "\n")
    return out


def _check_rows(rows: list[dict], source: str) -> list[str]:
    if not rows:
        raise ValueError(f"{source}: the reader found no samples")
    columns = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(c in r for r in rows)]
    for r in rows:
        missing = [c for c in REQUIRED_COLUMNS if r.get(c) in (None, "") and c != "mask"]
        if missing:
            raise ValueError(f"{source}: sample {r.get('id')!r} lacks {missing}")
        extra = set(r) - set(columns)
        if extra:
            raise ValueError(f"{source}: sample {r['id']!r} has unknown columns {sorted(extra)}")
    return columns


def index_dataset(source: str, root: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 1,
                  files: list[dict] | None = None) -> dict:
    """Run the dataset's reader on the extracted release ``root``; write ``out_dir/samples.csv`` atomically.

    Returns the summary also written to ``out_dir/index.json`` (rows, groups,
    per-split counts of official splits, and the release ``files`` with their
    sha256 when given); ``prepare`` copies it into ``meta.json``.
    """
    spec = get_spec(source)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{source}: extracted release {root} not found; run `tunevlseg data obtain` first")
    with atomic_dir(Path(out_dir)) as tmp:
        rows = spec.index(root, tmp, workers)
        columns = _check_rows(rows, source)
        with open(tmp / "samples.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="raise")
            writer.writeheader()
            writer.writerows(rows)
        summary = {
            "source": source,
            "root": str(root),
            "n_rows": len(rows),
            "n_groups": len({r["group"] for r in rows}),
            "official_splits": {s: sum(r.get("split") == s for r in rows) for s in ("train", "val", "test")},
            "files": files or [],
        }
        (tmp / "index.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def index_local(name: str, dataset_cfg: dict, out_dir: str | os.PathLike, source: str = "config") -> dict:
    """Index a local dataset (``source: folder | datalist | nnunet``) where its files are: ``out_dir/samples.csv``
    and ``index.json``, written atomically; returns the summary."""
    rows = local_rows(name, dataset_cfg, source)
    columns = _check_rows(rows, f"{source}: datasets.{name}")
    with atomic_dir(Path(out_dir)) as tmp:
        with open(tmp / "samples.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="raise")
            writer.writeheader()
            writer.writerows(rows)
        summary = {"source": dataset_cfg["source"], "root": "", "n_rows": len(rows),
                   "n_groups": len({r["group"] for r in rows}),
                   "official_splits": {s: sum(r.get("split") == s for r in rows) for s in ("train", "val", "test")},
                   "files": []}
        (tmp / "index.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def index_from_receipt(receipt: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 1) -> dict:
    """:func:`index_dataset` for the release a receipt of :func:`obtain` points to."""
    path = Path(receipt)
    if not path.is_file():
        raise FileNotFoundError(f"receipt {path} not found; run `tunevlseg data obtain` first")
    info = json.loads(path.read_text())
    return index_dataset(info["source"], info["root"], out_dir, workers, info.get("files"))


def prepare_settings(dataset_cfg: dict) -> dict:
    """Keyword arguments of ``prepare_dataset`` for one ``datasets.<name>`` config entry.

    Real datasets take their registry defaults (split fractions, validation
    carve, intensity window) unless the config sets them; ``leak_policy``
    (default ``group``, applied by ``prepare_dataset``) and ``annotations``
    (published splits and prompts) pass through when set.
    """
    source = dataset_cfg.get("source", "synthetic")
    defaults = {"split_fractions": [0.7, 0.15, 0.15]}
    if is_local(source):
        defaults.update({k: dataset_cfg[k] for k in PREPARE_KEYS if k in dataset_cfg})
    elif source != "synthetic":
        spec = get_spec(source)
        defaults = {"split_fractions": list(spec.fractions), **spec.prepare}
        if spec.val_fraction is not None:
            defaults["val_fraction"] = spec.val_fraction
    out = {**defaults, "seed": dataset_cfg.get("split_seed", 0)}
    for key in ("split_fractions", "val_fraction", "leak_policy", "annotations"):
        if key in dataset_cfg:
            out[key] = dataset_cfg[key]
    return out


def dataset_status(name: str, cfg: dict, results: Path, raw_dir: Path) -> str:
    """One line: ``missing`` (with what to do) / ``raw present`` / ``prepared`` (split sizes, manifest hash)."""
    source = cfg.get("source", "synthetic")
    prepared = []
    for meta_path in sorted((results / "prepared" / name).glob("*/meta.json"), key=lambda p: int(p.parent.name)
                            if p.parent.name.isdigit() else 0):
        meta = json.loads(meta_path.read_text())
        sizes = meta.get("split_sizes", {})
        prepared.append(f"{meta_path.parent.name}px train/val/test {sizes.get('train', 0)}/{sizes.get('val', 0)}/"
                        f"{sizes.get('test', 0)} manifest {meta.get('manifest_sha256', '?')[:12]}")
    if prepared:
        return f"{name} ({source}): prepared: " + "; ".join(prepared)
    if source == "synthetic":
        raw = results / "raw" / name
        state = "raw present" if (raw / "samples.csv").is_file() else "missing (generated by the workflow)"
        return f"{name} (synthetic): {state}"
    if is_local(source):
        indexed = (results / "index" / name / "samples.csv").is_file()
        return f"{name} ({source}): " + ("raw present (indexed)" if indexed else "local files (run `tunevlseg data "
                                                                                 "check` to verify them)")
    spec = get_spec(source)
    folder = raw_dir / spec.id
    archive = cfg.get("archive")
    if (results / "index" / name / "samples.csv").is_file():
        return f"{name} ({source}): raw present (indexed at {results / 'index' / name})"
    if (folder / "extracted").is_dir() and any((folder / "extracted").iterdir()):
        return f"{name} ({source}): raw present (extracted in {folder / 'extracted'})"
    if archive and Path(archive).exists():
        return f"{name} ({source}): raw present ({archive})"
    if all((folder / f.name).is_file() for f in spec.required_files):
        return f"{name} ({source}): raw present ({folder})"
    if spec.access == "direct":
        return f"{name} ({source}): missing; the workflow downloads it into {folder}/"
    return f"{name} ({source}): missing; {spec.how_to_get(folder)}"
