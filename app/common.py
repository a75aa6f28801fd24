"""Helpers shared by the tabs: input checks, error wrapping, the status text and the map view."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from routerdc.checkpoint import CheckpointError
from routerdc.data import DataError
from routerdc.model.encoder import EncoderError
from routerdc.limits import BOUNDS

from .context import AppContext
from .services.routers import RouterView

log = logging.getLogger("routerdc.app")

MAX_QUERY_CHARS = 100_000
LONG_QUERY_CHARS = 4_000
UPLOAD_TYPES = (".json", ".jsonl", ".csv")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

EXPECTED_ERRORS = (DataError, CheckpointError, EncoderError, ValueError, LookupError, OSError)


_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?[/\\](?:[^\s'\"`:,;()\[\]<>|*?/\\]+[/\\])+"
                   r"([^\s'\"`:,;()\[\]<>|*?/\\]*)")


def _server_path(m: re.Match) -> str:
    text = m.group(0)
    top = re.split(r"[/\\]", text.lstrip("~"), maxsplit=2)
    if not text.startswith("~") and len(top) > 1 and not os.path.isdir(os.sep + top[1]):
        return text  # not rooted in a folder of this machine: a URL path such as /v1/chat/completions
    return m.group(1) or "(a server folder)"


def strip_paths(msg: str) -> str:
    """``msg`` with every absolute server path (one rooted in a top-level folder of this machine)
    replaced by its last part, so that no message shows the server's folders (upload temp dirs,
    the data dir, the checkout)."""
    return _PATH.sub(_server_path, msg)


def clean_message(msg: str, replacements: dict[str, str] | None = None) -> str:
    """One readable message: temp-upload paths replaced by the file's own name, other server
    paths by their last part, invalid text (lone surrogates) replaced."""
    for old, new in (replacements or {}).items():
        msg = msg.replace(old, new)
    return strip_paths(msg).encode("utf-8", "replace").decode("utf-8").strip()


def guarded(fn: Callable) -> Callable:
    """Turn any exception of a handler into a ``gr.Error`` with a clear message (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except EXPECTED_ERRORS as exc:
            raise gr.Error(clean_message(str(exc)) or type(exc).__name__, print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the app must stay up for the next user
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Unexpected error ({type(exc).__name__}): {clean_message(str(exc))}. The app is still "
                           "running; please try again or report it.", print_exception=False) from None

    return wrapper


def check_query(query: Any) -> tuple[str, list[str]]:
    """The query to route and notices about what was changed or will be ignored.

    Raises ``gr.Error`` for an empty query or one over :data:`MAX_QUERY_CHARS`.
    """
    if query is None or not isinstance(query, str):
        raise gr.Error("Type a query first: the box is empty.", print_exception=False)
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise gr.Error(f"The query holds invalid text (a lone surrogate, U+{ord(query[exc.start]):04X}, at "
                       f"character {exc.start}); paste it again as plain text.", print_exception=False) from None
    notices: list[str] = []
    n_control = len(_CONTROL.findall(query))
    if n_control:
        query = _CONTROL.sub(" ", query)
        notices.append(f"Removed {n_control} control character(s) from the query.")
    query = unicodedata.normalize("NFC", query)
    if not query.strip():
        raise gr.Error("Type a query first: the box is empty or holds only whitespace"
                       + (" and control characters." if n_control else "."), print_exception=False)
    if len(query) > MAX_QUERY_CHARS:
        raise gr.Error(f"The query has {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}. "
                       "Shorten it (the router reads only its last 512 tokens anyway).", print_exception=False)
    if len(query) > LONG_QUERY_CHARS:
        notices.append(f"Long query ({len(query):,} characters): the router reads only its last "
                       "tokens (left truncation to the encoder's budget).")
    return query, notices


def unk_notice(view: RouterView, query: str) -> str | None:
    """A notice when the encoder's tokenizer maps much of the query to [UNK] (emoji, CJK on MiniLM)."""
    counts = view.unk_tokens(query[-20_000:])
    if counts is None:
        return None
    n_unk, n = counts
    if not n:
        return "The encoder sees no tokens in this query."
    frac = n_unk / n
    if frac >= 0.2:
        return (f"{frac:.0%} of the query's tokens are unknown to the encoder ({view.config.encoder}); "
                "emoji and many Chinese characters become [UNK], so this routing is less informed.")
    return None


def upload_path(file: Any) -> tuple[Path, str]:
    """``(path on disk, the user's file name)`` of an uploaded file, type-checked."""
    if file is None:
        raise gr.Error("No file uploaded.", print_exception=False)
    path = Path(file if isinstance(file, str) else getattr(file, "name", file))
    name = getattr(file, "orig_name", None) or path.name
    if path.suffix.lower() not in UPLOAD_TYPES:
        raise gr.Error(f"{name}: unsupported file type {path.suffix or '(none)'!r}; upload a score file "
                       f"in one of {', '.join(UPLOAD_TYPES)} (see the README's data formats).",
                       print_exception=False)
    try:
        size = path.stat().st_size
    except OSError:
        raise gr.Error(f"{name}: the upload is gone from the server; upload it again.", print_exception=False) from None
    if size > BOUNDS.max_upload_bytes:
        raise gr.Error(f"{name}: {size / 2**20:.1f} MiB; an uploaded score file may have at most "
                       f"{BOUNDS.max_upload_bytes / 2**20:.0f} MiB.", print_exception=False)
    return path, name


def load_upload(file: Any) -> list:
    """Score sets from an uploaded file, with errors that name the user's file, not a temp path."""
    from routerdc.data import load_scores

    path, name = upload_path(file)
    try:
        sets = load_scores(path, missing="drop")
    except DataError as exc:
        raise gr.Error(clean_message(str(exc), {str(path): name}), print_exception=False) from None
    if not sets or all(len(s) == 0 for s in sets):
        raise gr.Error(f"{name}: the file holds no rows.", print_exception=False)
    rows = sum(len(s) for s in sets)
    if rows > BOUNDS.max_upload_rows:
        raise gr.Error(f"{name}: {rows:,} rows; an uploaded score file may have at most {BOUNDS.max_upload_rows:,}.",
                       print_exception=False)
    return sets


# ----------------------------------------------------------------------------------- status
def device_line() -> str:
    """The device, without importing torch when it is not loaded yet (the ONNX engine routes
    without it; it loads for training and evaluation)."""
    torch = sys.modules.get("torch")
    slow = "fine-tuning the encoder in the Train tab is slow; frozen-encoder training is fast"
    if torch is None:
        if Path("/proc/driver/nvidia/version").exists():
            return "an NVIDIA driver is present; torch (and CUDA) load with the first training or evaluation"
        return f"CPU; no GPU: no NVIDIA driver on this machine, so {slow}"
    if torch.cuda.is_available():
        import os

        where = "CUDA" if (os.environ.get("ROUTERDC_DEVICE") or "cpu").startswith("cuda") else "the CPU copy of the router"
        return f"GPU {torch.cuda.get_device_name(0)}; routing runs on {where}"
    return (f"CPU ({torch.get_num_threads()} torch thread(s)); no GPU: CUDA is not available on "
            f"this machine, so {slow}")


def status_markdown(ctx: AppContext, key: str | None) -> str:
    lines = ["### Status"]
    view = ctx.routers.loaded.get(key) if key else None
    if view is None and key:
        try:
            view = ctx.routers.get(key)
        except Exception as exc:  # noqa: BLE001
            lines.append(f"- **Router**: cannot load `{strip_paths(key)}`: {clean_message(str(exc))}")
    if view is not None:
        lines.append(f"- **Router**: {view.describe()}")
        lines.append(f"- **Map**: {view.map.state}")
    elif not key:
        lines.append("- **Router**: none loaded. Train one in the Train tab (frozen encoder: about a "
                     "minute on a CPU) or pick one in the list.")
    for note in ctx.notes:
        lines.append(f"- **Note**: {clean_message(note)}")
    lines.append(f"- **Device**: {device_line()}")
    gen = ctx.generation
    if gen is not None:
        lines.extend(gen.status_lines(view.llms if view is not None else ()))
    else:
        lines.append("- **Generation backend**: none configured (start with `--models-config`, see README); "
                     "RouterBench queries show their recorded answers.")
    n = sum(len(e.set) for e in ctx.data.entries)
    where = strip_paths(str(ctx.data.data_dir)) if ctx.data.data_dir else "(no data directory)"
    lines.append(f"- **Data**: {len(ctx.data.entries)} score sets, {n:,} queries from `{where}`")
    fetch = getattr(ctx, "fetch", None)
    if fetch is not None:
        lines.append(fetch.status_line())
    for err in ctx.data.errors[:5] if fetch is None or fetch.finished.is_set() else ():
        lines.append(f"  - unavailable: {clean_message(str(err))}")
    for note in ctx.data.notes[:5]:
        lines.append(f"  - note: {note.split(' (rows')[0]}")
    t = ctx.training.status
    lines.append(f"- **Training**: {'running, step %d/%d' % (t.step, t.steps) if t.running else 'idle'}")
    return strip_paths("\n".join(lines))  # no server folder in the status either
