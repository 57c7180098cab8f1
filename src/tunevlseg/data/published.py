"""Published splits and prompts: the medvlsm annotation files ``anns/{train,val,test}.json``.

The reference benchmark took its splits and prompts from these files. Each is
a JSON list of records ``{"img_name": ..., "mask_name": ..., "prompts": {"p0":
"", "p1": ..., ...}}``; a prompt may be a list of phrasings (the reference
draws one at random per step). With ``datasets.<id>.annotations: <folder>``
(the folder holding ``anns/``, or ``anns/`` itself) ``prepare`` keeps only the
samples the files list, in the split they list them in, with their prompts:

- a record is matched to one of our samples by the dataset's
  ``DatasetSpec.published_id`` rule, else by its ``img_name`` = the file name
  of the sample's image (images matched by name; the masks stay ours, read
  from the release);
- a prompt given as a list keeps its first phrasing; a final "." is added to
  non-empty prompts (the reference's ``insert_stop_at_last``);
- a sample listed in several files stays in the most held-out one (test >
  val > train) and is reported (``meta.json`` ``published.listed_twice``); one
  listed twice in one file is kept once;
- a record matching no sample is an error naming the file (a wrong or
  another dataset's annotation file); samples no file lists are left out and
  counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from tunevlseg.data.spec import SPLITS

log = logging.getLogger(__name__)
_PROMPT_KEY = re.compile(r"^p(\d+)$")


def annotation_files(folder: str | Path) -> dict[str, Path]:
    """``{split: <folder>/anns/<split>.json}`` (or ``<folder>/<split>.json``) for the files that exist."""
    folder = Path(folder)
    base = folder / "anns" if (folder / "anns").is_dir() else folder
    return {s: base / f"{s}.json" for s in SPLITS if (base / f"{s}.json").is_file()}


def _read_records(path: Path) -> list[dict]:
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"annotation file {path} is not readable JSON: {e}") from e
    if not isinstance(records, list):
        raise ValueError(f"annotation file {path}: expected a JSON list of records, got {type(records).__name__}")
    for i, r in enumerate(records):
        if not (isinstance(r, dict) and isinstance(r.get("img_name"), str) and isinstance(r.get("prompts"), dict)):
            raise ValueError(f"annotation file {path}: record {i} needs img_name, mask_name and a prompts mapping "
                             f"(medvlsm format), got {str(r)[:120]}")
    return records


def _prompt(value, path: Path, i: int, key: str) -> str:
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"annotation file {path}: record {i} prompt {key} is an empty or non-text list")
        value = value[0]
    if not isinstance(value, str):
        raise ValueError(f"annotation file {path}: record {i} prompt {key} is {type(value).__name__}, not text")
    value = value.strip()
    return value if not value or value.endswith(".") else value + "."


def _by_image_name(rows: list[dict]):
    """The default matcher: a record's ``img_name`` is the file name of exactly one sample's image."""
    by_name: dict[str, list[str]] = {}
    for r in rows:
        by_name.setdefault(Path(r["image"]).name, []).append(r["id"])

    def match(record: dict) -> str | None:
        ids = by_name.get(record["img_name"], [])
        if len(ids) > 1:
            raise ValueError(f"annotation record {record['img_name']!r}: {len(ids)} samples share this image "
                             f"({ids[:3]}); the dataset needs a published_id rule in its spec")
        return ids[0] if ids else None

    return match


def apply_published(rows: list[dict], folder: str | Path, published_id=None) -> tuple[list[dict], dict]:
    """Keep the samples the annotation files list, with their split and prompts; returns ``(rows, report)``.

    ``published_id(record) -> sample id`` matches records to samples (default:
    by image file name). Each returned row carries ``split`` and ``prompts``
    (key -> text, keys ``p0``… in numeric order, the same for every row).
    """
    files = annotation_files(folder)
    missing = [s for s in SPLITS if s not in files]
    if missing:
        raise FileNotFoundError(f"annotations {folder}: missing {', '.join(f'{s}.json' for s in missing)} "
                                f"(expected <folder>/anns/{{train,val,test}}.json)")
    known = {r["id"] for r in rows}
    match = _by_image_name(rows) if published_id is None else published_id
    listed: dict[str, list[tuple[str, dict]]] = {}
    keys: list[str] | None = None
    report = {"folder": str(folder), "files": {}, "records": {}}
    for split, path in files.items():
        records = _read_records(path)
        report["files"][split] = hashlib.sha256(path.read_bytes()).hexdigest()
        report["records"][split] = len(records)
        unmatched = []
        for i, record in enumerate(records):
            if not all(_PROMPT_KEY.match(k) for k in record["prompts"]):
                raise ValueError(f"annotation file {path}: record {i} has prompt keys {list(record['prompts'])}; "
                                 f"expected p0, p1, …")
            record_keys = sorted(record["prompts"], key=lambda k: int(k[1:]))
            if keys is None:
                keys = record_keys
            elif record_keys != keys:
                raise ValueError(f"annotation file {path}: record {i} has prompt keys {record_keys}, "
                                 f"the others {keys}")
            sid = match(record)
            if sid is None or sid not in known:
                unmatched.append(f"{record['img_name']} / {record.get('mask_name')}")
                continue
            prompts = {k: _prompt(record["prompts"][k], path, i, k) for k in keys}
            listed.setdefault(sid, []).append((split, prompts))
        if unmatched:
            raise ValueError(f"annotation file {path}: {len(unmatched)} of {len(records)} records match no sample of "
                             f"this dataset (e.g. {unmatched[:3]}); is it another dataset's file?")
    listed_twice = []
    out = []
    for r in rows:
        entries = listed.get(r["id"])
        if not entries:
            continue
        split, prompts = max(entries, key=lambda e: SPLITS.index(e[0]))
        if len(entries) > 1:
            listed_twice.append({"id": r["id"], "listed_in": [e[0] for e in entries], "kept_in": split})
        out.append({**r, "split": split, "prompts": prompts})
    report.update(prompt_keys=keys or [], n_unlisted=len(rows) - len(out), listed_twice=listed_twice)
    if listed_twice:
        log.warning("annotations %s: %d samples are listed more than once (kept in the most held-out split): %s",
                    folder, len(listed_twice), listed_twice[:5])
    if report["n_unlisted"]:
        log.info("annotations %s: %d samples of the release are in no annotation file (left out)",
                 folder, report["n_unlisted"])
    return out, report
