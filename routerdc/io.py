"""The one atomic-write path: a file or a folder is written beside its target, fsynced, and
renamed into place, and the parent folder is fsynced after the rename.

A crash (``kill -9``) leaves either the old or the new content, never a mix; the fsyncs make the
same hold across a power loss. Left-overs of a crash are hidden names (``.X.tmp-*``,
``.X.old-*``); :func:`sweep_stale` removes them and :func:`is_leftover` tells discovery to skip
them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-[A-Za-z0-9_]+$|^\..+\.\d+\.tmp$|^\..+\.tmp$")


def is_leftover(name: str) -> bool:
    """Whether ``name`` is a temporary or half-deleted left-over of an atomic write."""
    return bool(_LEFTOVER.match(name))


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so that renames in it survive a power loss (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move a file written elsewhere (a download's ``.part``, a tool's output) onto ``path``
    atomically: fsync it, rename it, fsync the folder. For writes that cannot go through
    :func:`atomic_file` because another program or a resumable download writes the file."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_results(record: Any, json_path: str | os.PathLike, markdown: str, markdown_path: str | os.PathLike) -> None:
    """A study's ``record`` as indented JSON and its ``markdown`` table, each written atomically."""
    write_text(json_path, json.dumps(record, indent=2) + "\n")
    write_text(markdown_path, markdown)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _normal_permissions(folder: Path) -> None:
    """Give ``folder`` (made 0700 by mkdtemp) and its files the modes the umask allows."""
    umask = _umask()
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` by rename.

    Every file and folder is fsynced before the rename, the parent after it. On an exception
    (or a cancel) the temporary folder is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _normal_permissions(tmp)
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep_stale(folder: str | os.PathLike, *, min_age_s: float = 60.0) -> list[Path]:
    """Remove left-overs of killed atomic writes directly in ``folder`` (older than ``min_age_s``,
    so a write in progress in another process is left alone). Returns what was removed.

    A ``.X.old-*`` folder whose ``X`` is missing is the only copy of a router that a crash caught
    between the two renames: it is renamed back to ``X`` instead of deleted.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        if not is_leftover(p.name):
            continue
        try:
            if now - p.lstat().st_mtime < min_age_s:
                continue
            m = re.match(r"^\.(.+)\.old-[A-Za-z0-9_]+$", p.name)
            if m and p.is_dir() and not (folder / m.group(1)).exists():
                os.replace(p, folder / m.group(1))
                fsync_dir(folder)
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed
