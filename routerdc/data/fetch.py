"""Download the score data from the official RouterDC repository's files, verified by SHA-256.

The files are listed, with their size and SHA-256, in ``manifest.json`` beside this module. The
official repository's ``datasets/<folder>/<file>`` is fetched from
``$ROUTERDC_DATA_URL/datasets/<folder>/<file>`` (default: the repository's raw files on GitHub)
and stored in the layout of the data directory: ``split2_model7*`` under ``routerdc/``,
``routerbench_*`` under ``routerbench/``.

Each file is written to ``<name>.part`` and renamed into place only once its size and SHA-256
match, so a data directory never holds a wrong file. An interrupted download resumes from its
``.part`` with an HTTP Range request (and starts again cleanly when the server ignores Range); a
file whose checksum does not match is deleted, never kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from routerdc.data.scoreset import DataError
from routerdc.io import commit_file

URL_ENV = "ROUTERDC_DATA_URL"
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/shuhao02/RouterDC/main"
MANIFEST = Path(__file__).with_name("manifest.json")


class FetchError(DataError):
    """A download failed (network, HTTP status, size or checksum); nothing wrong was kept."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of the manifest."""

    path: str  # where it goes, relative to the data directory: routerdc/split2_model7/mmlu_test.json
    size: int
    sha256: str

    @property
    def source(self) -> str:
        """Its path relative to the base URL: ``datasets/<folder>/<file>``."""
        return "datasets/" + self.path.split("/", 1)[1]


@dataclass(frozen=True)
class FetchProgress:
    """What a fetch has done so far (passed to the ``progress`` callback)."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str = ""  # the file being downloaded, "" between files

    def line(self) -> str:
        mb = 1 / 1e6
        return (f"{self.files_done}/{self.files_total} files, {self.bytes_done * mb:.1f}/"
                f"{self.bytes_total * mb:.1f} MB" + (f" ({self.current})" if self.current else ""))


@dataclass(frozen=True)
class FetchReport:
    dest: Path
    downloaded: tuple[str, ...]
    present: tuple[str, ...]  # already there and verified
    bytes: int  # bytes received over the network
    seconds: float


def base_url(url: str | None = None) -> str:
    """The base URL: ``url``, else ``$ROUTERDC_DATA_URL``, else the official repository."""
    return (url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def load_manifest(path: str | os.PathLike = MANIFEST) -> tuple[RemoteFile, ...]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        files = tuple(RemoteFile(str(f["path"]), int(f["size"]), str(f["sha256"]).lower()) for f in raw["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a data manifest ({exc})") from None
    for f in files:
        parts = f.path.split("/")
        if len(parts) != 3 or parts[0] not in ("routerdc", "routerbench") or ".." in parts or len(f.sha256) != 64:
            raise DataError(f"{path}: bad manifest entry {f.path!r}")
    return files


def build_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of the score files under ``data_dir`` (for maintainers: ``data manifest``)."""
    root = Path(data_dir)
    files = sorted(p for fam in ("routerdc", "routerbench") for p in (root / fam).glob("*/*") if p.is_file())
    if not files:
        raise DataError(f"{root}: no score files under routerdc/ or routerbench/")
    return {"source": DEFAULT_BASE_URL, "files": [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)} for p in files]}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(dest: Path, f: RemoteFile) -> bool:
    """``dest/f.path`` exists with the manifest's size and SHA-256."""
    p = dest / f.path
    return p.is_file() and p.stat().st_size == f.size and sha256_file(p) == f.sha256


def check(dest: str | os.PathLike, files: Sequence[RemoteFile] | None = None) -> list[str]:
    """Problems of the data directory against the manifest (empty: every file there and verified)."""
    root = Path(dest)
    out = []
    for f in files if files is not None else load_manifest():
        p = root / f.path
        if not p.is_file():
            out.append(f"{f.path}: missing")
        elif not verified(root, f):
            out.append(f"{f.path}: size or SHA-256 differs from the manifest")
    return out


def fetch(dest: str | os.PathLike, *, url: str | None = None, files: Sequence[RemoteFile] | None = None,
          progress: Callable[[FetchProgress], None] | None = None, retries: int = 3, timeout: float = 30.0,
          backoff: float = 1.0) -> FetchReport:
    """Download the manifest's files missing from ``dest`` (files already there are verified and
    kept). Each file is retried ``retries`` times after a network error, resuming its ``.part``.
    Raises :class:`FetchError` naming the file on failure; the files verified so far stay."""
    import httpx

    t0 = time.perf_counter()
    root = Path(dest)
    files = tuple(files if files is not None else load_manifest())
    base = base_url(url)
    total = sum(f.size for f in files)
    present = [f for f in files if verified(root, f)]
    done_bytes = sum(f.size for f in present)
    received = 0
    downloaded: list[str] = []

    def report(n_files: int, extra: int, current: str = "") -> None:
        if progress is not None:
            progress(FetchProgress(n_files, len(files), done_bytes + extra, total, current))

    report(len(present), 0)
    todo = [f for f in files if f not in present]
    # Identity encoding: byte offsets of a Range must be those of the file, not of a gzip stream.
    with httpx.Client(timeout=timeout, follow_redirects=True, headers={"Accept-Encoding": "identity"}) as client:
        for f in todo:
            target = root / f.path
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FetchError(f"cannot create the data directory {target.parent}: {exc}") from None
            attempt = 0
            while True:
                try:
                    received += _download(client, f"{base}/{f.source}", target, f,
                                          lambda n, f=f: report(len(present) + len(downloaded), n, f.path))
                    break
                except _Retry as exc:  # network trouble: resume from the .part, a few times
                    attempt += 1
                    if attempt > retries:
                        raise FetchError(f"{f.path}: download failed after {attempt} attempt(s): {exc}") from None
                    time.sleep(backoff * attempt)
                except OSError as exc:  # the destination: not writable, full disk
                    raise FetchError(f"{f.path}: cannot write into {root}: {exc}") from None
            downloaded.append(f.path)
            done_bytes += f.size
            report(len(present) + len(downloaded), 0)
    return FetchReport(root, tuple(downloaded), tuple(f.path for f in present), received, time.perf_counter() - t0)


class _Retry(Exception):
    """A transient failure: worth another attempt."""


def _download(client, url: str, target: Path, f: RemoteFile, on_bytes: Callable[[int], None]) -> int:
    """Download ``url`` into ``target`` through ``target.part``, resuming it; returns the bytes
    received. Raises :class:`_Retry` on network errors, :class:`FetchError` on a wrong file."""
    import httpx

    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if offset > f.size:
        part.unlink()
        offset = 0
    received = 0
    try:
        with client.stream("GET", url, headers={"Range": f"bytes={offset}-"} if offset else {}) as r:
            if r.status_code == 416 and offset == f.size:  # the .part is already whole
                pass
            elif r.status_code == 206 and offset and r.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                received = _write(r, part, "ab", offset, on_bytes)
            elif r.status_code == 200:  # the server ignored Range (or there was no .part): start cleanly
                offset = 0
                received = _write(r, part, "wb", 0, on_bytes)
            elif r.status_code in (408, 429) or r.status_code >= 500:
                raise _Retry(f"HTTP {r.status_code} from {url}")
            else:
                if r.status_code in (206, 416):  # a Range answer that does not fit the .part
                    part.unlink(missing_ok=True)
                    raise _Retry(f"HTTP {r.status_code} does not continue the partial file; starting again")
                raise FetchError(f"{f.path}: HTTP {r.status_code} from {url}")
    except httpx.TransportError as exc:  # refused, reset, timed out, cut halfway
        raise _Retry(f"{type(exc).__name__}: {exc or 'connection error'} ({url})") from None
    size = part.stat().st_size
    if size < f.size:  # cut short without a transport error: resume from the .part
        raise _Retry(f"{url}: {size} of {f.size} bytes received")
    digest = sha256_file(part) if size == f.size else None
    if digest != f.sha256:
        part.unlink()
        if offset:  # the bytes kept from before may be the wrong ones: start again from nothing
            raise _Retry(f"{url}: checksum mismatch after resuming at byte {offset}; starting again")
        raise FetchError(f"{f.path}: checksum mismatch (expected SHA-256 {f.sha256[:12]}..., size {f.size}; got "
                         f"{'SHA-256 ' + digest[:12] + '...' if digest else 'size ' + str(size)}); the file was "
                         f"refused and deleted. Is {url} the official file?")
    commit_file(part, target)  # fsynced, renamed, folder fsynced (routerdc.io)
    return received


def _write(r, part: Path, mode: str, offset: int, on_bytes: Callable[[int], None]) -> int:
    n = 0
    with part.open(mode) as out:
        for chunk in r.iter_raw():  # as received: a cut keeps every byte that came
            out.write(chunk)
            n += len(chunk)
            on_bytes(offset + n)
        out.flush()
        os.fsync(out.fileno())
    return n


def missing(dest: str | os.PathLike, files: Iterable[RemoteFile] | None = None) -> list[RemoteFile]:
    """The manifest's files not present (by name) under ``dest``."""
    root = Path(dest)
    return [f for f in (files if files is not None else load_manifest()) if not (root / f.path).is_file()]
