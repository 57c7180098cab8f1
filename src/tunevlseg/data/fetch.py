"""Getting raw archives: resumable, checksum-verified downloads and safe extraction.

``download`` streams a URL to ``<dest>.part`` (resuming with an HTTP ``Range``
request after an interruption), checks the sha256 and only then renames the
file to ``dest``. When the registry knows no checksum, the hash of the first
complete download is recorded next to the file (``<dest>.sha256``) and later
runs verify against it (trust on first use).

``safe_extract`` unpacks a zip or tar archive after checking every member:
absolute paths, ``..`` components and links pointing outside the target
folder are refused before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tunevlseg.data.atomic import atomic_dir

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, expected: str | None = None) -> str:
    """sha256 of an existing file, checked against ``expected`` (the registry's) and ``<file>.sha256`` if present.

    ``ValueError`` naming the file, both hashes and where the expected one
    comes from on a mismatch; returns the file's sha256.
    """
    path = Path(path)
    actual = sha256_file(path)
    record = path.with_name(path.name + ".sha256")
    recorded = record.read_text().split()[0] if record.is_file() and record.read_text().split() else None
    for want, source in ((expected, "the registry"), (recorded, str(record))):
        if want and actual != want.lower():
            raise ValueError(f"{path}: sha256 {actual} does not match {want} recorded in {source}; the file changed "
                             f"or is corrupt (fetch it again, or fix the recorded value)")
    return actual


def _progress(total: int | None, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, disable=None, leave=False)


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """One attempt: append to ``part`` from its current size (Range request) until the end."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: the .part already holds the whole file
            return
        raise
    with response:
        if have and response.status != 206:  # server ignored the range: start again
            log.info("%s: server does not resume; restarting the download", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out, _progress(total, have, part.name[:-5]) as bar:
            got, next_log = 0, 0.1
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                got += len(block)
                bar.update(len(block))
                if bar.disable and total and (have + got) / total >= next_log:  # no terminal (job log): 10 % steps
                    log.info("%s: %.0f %% of %.1f MiB", part.name[:-5], 100 * (have + got) / total, total / 2**20)
                    next_log += 0.1
        if length is not None and got < int(length):
            raise ConnectionError(f"transfer of {url} interrupted after {have + got} of {total} bytes")


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, retries: int = 3,
             timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` (streamed, resumable, verified); returns the file's sha256.

    An existing complete ``dest`` is verified and kept. A partial
    ``<dest>.part`` from an earlier run is continued. After ``retries``
    failed attempts the ``.part`` is kept (the next call resumes) and a
    ``RuntimeError`` names the URL. A checksum mismatch deletes the download
    and raises ``ValueError`` naming the file, expected and actual hashes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    record = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (record.read_text().split()[0] if record.is_file() else None)
    if dest.is_file():
        return verify_file(dest, sha256)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except (OSError, urllib.error.URLError, ConnectionError) as e:
            log.warning("download %s attempt %d/%d failed: %s", url, attempt, retries, e)
            if attempt == retries:
                raise RuntimeError(f"cannot download {url} to {dest} after {retries} attempts: {e} "
                                   f"(partial data kept in {part}; run again to resume)") from e
            time.sleep(min(2.0 ** (attempt - 1), 10.0) * 0.1)
    actual = sha256_file(part)
    if expected and actual != expected:
        part.unlink()
        raise ValueError(f"{url}: downloaded file {dest.name} has sha256 {actual}, expected {expected} (download deleted)")
    os.replace(part, dest)
    if not expected:
        record.write_text(f"{actual}  {dest.name}\n")
        log.warning("%s: no known sha256; recorded %s in %s (verified on later runs)", dest.name, actual, record)
    return actual


def _check_member(archive: Path, name: str, link: str | None = None, hardlink: bool = False) -> None:
    """Refuse absolute paths, '..' and links leaving the extraction folder (names the archive and member)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"archive {archive}: refusing absolute path {name!r}")
    if ".." in p.parts:
        raise ValueError(f"archive {archive}: refusing path with '..' component {name!r}")
    if link is not None:
        target = PurePosixPath(link.replace("\\", "/"))
        if target.is_absolute():
            raise ValueError(f"archive {archive}: link {name!r} points to absolute path {link!r}")
        base = PurePosixPath() if hardlink else p.parent
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise ValueError(f"archive {archive}: link {name!r} -> {link!r} leaves the target folder")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) ``archive`` into ``target`` (atomically); returns ``target``.

    Every member is checked before anything is written; an unsafe member, an
    empty archive or a file that is neither zip nor tar raises ``ValueError``
    naming the archive. ``target`` appears only when extraction completed.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if not infos:
                raise ValueError(f"archive {archive} is empty")
            for info in infos:
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                _check_member(archive, info.filename, zf.read(info).decode() if is_link else None)
            with atomic_dir(target) as tmp:
                zf.extractall(tmp)
        return target
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as e:
        raise ValueError(f"{archive} is not a zip or tar archive ({e})") from e
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"archive {archive} is corrupt: {e}") from e
        if not members:
            raise ValueError(f"archive {archive} is empty")
        for m in members:
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                raise ValueError(f"archive {archive}: refusing special file {m.name!r}")
            _check_member(archive, m.name, m.linkname if (m.issym() or m.islnk()) else None, hardlink=m.islnk())
        with atomic_dir(target) as tmp:
            tf.extractall(tmp, filter="data")
    return target
