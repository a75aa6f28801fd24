"""A local HTTP file server on 127.0.0.1 for the data-fetch tests: it serves a folder as the
official repository lays it out (``/datasets/<folder>/<file>``), honours ``Range: bytes=N-``, and
can misbehave on purpose: cut a response halfway, ignore Range, or serve corrupted bytes."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable


@dataclass
class Behaviour:
    cut_once: dict[str, int] = field(default_factory=dict)  # url path -> bytes sent before the connection drops (once)
    corrupt: set[str] = field(default_factory=set)  # url paths served with one byte flipped
    ignore_range: bool = False
    hold: threading.Event | None = None  # until it is set, bodies trickle out one byte a second (a slow download)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (url path, Range header)


class FileServer:
    """``with FileServer(root) as srv: srv.url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.behaviour = Behaviour()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                b = server.behaviour
                rng = self.headers.get("Range")
                b.requests.append((self.path, rng))
                path = server.root / self.path.lstrip("/")
                if ".." in self.path or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if self.path in b.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                if rng and not b.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = b.cut_once.pop(self.path, None)
                if cut is not None:  # send part of the body, then drop the connection
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                sent = 0
                while b.hold is not None and not b.hold.wait(1.0) and sent < len(body) - 1:
                    self.wfile.write(body[sent:sent + 1])  # keeps the client's read timeout alive
                    self.wfile.flush()
                    sent += 1
                self.wfile.write(body[sent:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="file-server", daemon=True)

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def official_layout(data_dir: Path, out: Path, paths: Iterable[str]) -> Path:
    """Copy ``paths`` (data-directory layout) into ``out`` in the official repository's layout:
    ``datasets/<folder>/<file>``."""
    for p in paths:
        dst = out / "datasets" / p.split("/", 1)[1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / p, dst)
    return out
