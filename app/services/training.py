"""The one training run of this process: who runs it, how far it is, and how to cancel it. The
Train tab starts runs (new or continued) through :meth:`TrainingService.begin`; the status area
reads it. What a cancelled run needs to be continued (its recipe and data) is kept here too, by
output folder (:meth:`TrainingService.keep_resumable`), for the last few cancelled runs. Nothing
here imports Gradio."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["Busy", "TrainingService", "TrainingStatus"]


@dataclass(frozen=True)
class TrainingStatus:
    """A snapshot of the run (for the status area)."""

    running: bool = False
    owner: str | None = None
    step: int = 0
    steps: int = 0
    started: float = 0.0
    output_dir: str | None = None


class Busy(RuntimeError):
    """Another run is in progress (one at a time per process)."""

    def __init__(self, status: TrainingStatus) -> None:
        super().__init__(f"another training run is in progress (step {status.step}/{status.steps})")
        self.status = status


class TrainingService:
    """One training run at a time; its progress; a cancel flag per run id; the cancelled runs that
    can be continued (at most ``max_resumable``, the latest)."""

    def __init__(self, max_resumable: int = 8) -> None:
        self._lock = threading.Lock()  # held for the whole run
        self._state = threading.Lock()  # guards the fields below
        self._status = TrainingStatus()
        self._cancels: dict[str, threading.Event] = {}
        self._resumable: OrderedDict[str, Any] = OrderedDict()
        self._max_resumable = max_resumable

    @property
    def status(self) -> TrainingStatus:
        with self._state:
            return self._status

    def begin(self, steps: int, output_dir: str) -> tuple[str, threading.Event]:
        """Start a run: ``(run id, its cancel event)``; :class:`Busy` when one is running."""
        if not self._lock.acquire(blocking=False):
            raise Busy(self.status)
        rid, cancel = uuid.uuid4().hex, threading.Event()
        with self._state:
            self._cancels[rid] = cancel
            self._status = TrainingStatus(True, rid, 0, steps, time.time(), output_dir)
        return rid, cancel

    def progress(self, rid: str, step: int) -> None:
        with self._state:
            if self._status.owner == rid:
                self._status = TrainingStatus(True, rid, step, self._status.steps, self._status.started,
                                              self._status.output_dir)

    def end(self, rid: str) -> None:
        """Finish the run ``rid`` (however it ended) and free the slot; a second call does nothing."""
        with self._state:
            cancel = self._cancels.pop(rid, None)
            if cancel is not None:
                cancel.set()
            if self._status.owner == rid:
                self._status = TrainingStatus(output_dir=self._status.output_dir)
            else:
                return
        self._lock.release()

    def cancel(self, rid: str | None) -> bool:
        """Ask the run ``rid`` to stop after its current step; False when it is not running."""
        with self._state:
            evt = self._cancels.get(rid) if rid else None
        if evt is None:
            return False
        evt.set()
        return True

    def keep_resumable(self, output_dir: str, run: Any) -> None:
        """Remember what the cancelled run writing ``output_dir`` needs to be continued."""
        with self._state:
            self._resumable[output_dir] = run
            self._resumable.move_to_end(output_dir)
            while len(self._resumable) > self._max_resumable:
                self._resumable.popitem(last=False)

    def resumable(self, output_dir: str | None) -> Any:
        """What :meth:`keep_resumable` kept for ``output_dir``, or None."""
        with self._state:
            return self._resumable.get(output_dir) if output_dir else None

    def forget_resumable(self, output_dir: str) -> None:
        with self._state:
            self._resumable.pop(output_dir, None)
