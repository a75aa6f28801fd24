"""The score data downloaded in the background when the data directory is empty at start (a
Hugging Face Space has no data beside the repository).

The app starts and routes at once; the status area shows the download's progress; when it
finishes, the data are loaded and swapped in (Explore, Train, Evaluate and the examples use them),
and the maps of the loaded routers are computed again over them. A failed download leaves the
app up, with the reason and the command to run in the status area. Nothing here imports Gradio.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Sequence

from routerdc.data import DataError
from routerdc.data.fetch import FetchProgress, RemoteFile, base_url, fetch, load_manifest
from routerdc.data.registry import data_dir_path

log = logging.getLogger("routerdc.app")


class DataFetch:
    """One background download into ``dest`` of ``files``; read ``state``/``status_line()``."""

    def __init__(self, ctx, dest: Path, files: Sequence[RemoteFile], url: str | None = None):
        self.ctx = ctx
        self.dest = dest
        self.files = tuple(files)
        self.url = base_url(url)
        self.state = "starting"  # "downloading" | "loading" | "done" | "failed"
        self.detail = ""
        self.progress: FetchProgress | None = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="data-fetch", daemon=True)

    def start(self) -> "DataFetch":
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the download (and the data swap) to finish; True when the data are in."""
        self.finished.wait(timeout)
        return self.state == "done"

    def _on_progress(self, p: FetchProgress) -> None:
        self.progress = p

    def _run(self) -> None:
        from .services.data import load_data

        t0 = time.perf_counter()
        try:
            self.state = "downloading"
            rep = fetch(self.dest, url=self.url, files=self.files, progress=self._on_progress, backoff=0.5)
            self.state = "loading"
            bank = load_data(self.ctx.settings)
            self.ctx.data = bank
            self.detail = (f"{len(rep.downloaded)} file(s), {rep.bytes / 1e6:.1f} MB in {rep.seconds:.1f} s, "
                           f"verified by SHA-256; {len(bank.entries)} score sets loaded in "
                           f"{time.perf_counter() - t0:.1f} s")
            self._refresh_maps()
            self.state = "done"
            log.info("score data downloaded into %s: %s", self.dest, self.detail)
        except Exception as exc:  # noqa: BLE001 - the app stays up; the status area says why
            if not isinstance(exc, DataError):
                log.exception("the score data download failed")
            self.detail = f"{exc}" if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            self.state = "failed"
        finally:
            self.finished.set()

    def _refresh_maps(self) -> None:
        """Maps computed (or being computed) over the empty data are computed again."""
        ctx = self.ctx
        for view in list(ctx.routers.loaded.values()):
            ctx.maps.wait(view)
            if view.map.emap is None:
                ctx.maps.ensure(view)

    def status_line(self) -> str:
        where = f"from {self.url} into `{self.dest}`"
        if self.state in ("starting", "downloading"):
            p = self.progress
            return (f"- **Data download**: the data directory was empty; downloading the score data {where}: "
                    f"{p.line() if p else 'connecting'}. Routing works meanwhile; Explore, Train, Evaluate "
                    "and the examples fill in when it finishes.")
        if self.state == "loading":
            return f"- **Data download**: downloaded {where}; loading the score sets."
        if self.state == "done":
            return f"- **Data download**: done {where} ({self.detail})."
        return (f"- **Data download**: failed {where}: {self.detail}. The app works without the data (routing); "
                "Explore, Train, Evaluate need them: run `python -m routerdc data fetch` (set `ROUTERDC_DATA_URL` "
                "for a mirror) and restart.")


def start_fetch(ctx) -> DataFetch | None:
    """Start downloading the score data when the data directory holds none of the files the app
    loads (and ``settings.fetch_data``); None when there is nothing to do."""
    s = ctx.settings
    if not getattr(s, "fetch_data", False):
        return None
    try:
        files = [f for f in load_manifest() if s.data_files is None or f.path in s.data_files]
    except DataError as exc:
        log.warning("no data download: %s", exc)
        return None
    dest = data_dir_path(s.data_dir)
    if not files or any((dest / f.path).exists() for f in files):
        return None
    return DataFetch(ctx, dest, files).start()
