"""Every bound on user-controlled input, in one place.

:data:`BOUNDS` (a frozen :class:`Bounds`) is read by the data readers, the routed API and the
app; README's "Bounds" table lists the same fields. A bound is checked before the expensive
work it protects (a body before it is read whole, a cell before it is parsed), so a refused
input costs milliseconds and holds no lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """Bounds on requests (API), score files (readers, uploads) and sessions (app)."""

    # routed API (routerdc.serving)
    max_body_bytes: int = 1 << 20            # request body (413 beyond, decided from the header/stream)
    max_messages: int = 64                   # messages per chat request
    max_message_chars: int = 32_000          # characters per message content
    max_stop: int = 4                        # stop strings per request
    max_stop_chars: int = 64                 # characters per stop string
    max_name_chars: int = 256                # model / user / message name fields
    seed_min: int = 0                        # seeds accepted: [seed_min, seed_max] (else 400)
    seed_max: int = 2**63 - 1
    # data readers (routerdc.data.formats)
    max_cell_chars: int = 200_000            # a CSV cell parsed as a Python list literal
    max_list_items: int = 1_000              # strings in such a list literal
    # uploads in the app
    max_upload_bytes: int = 20 << 20         # one uploaded score file (Gradio max_file_size too)
    max_upload_rows: int = 200_000           # rows of one uploaded score file
    # sessions in the app
    state_session_capacity: int = 100        # Gradio sessions whose state is kept (oldest evicted)
    delete_cache_every_s: int = 600          # Gradio's delete_cache: how often uploads are swept
    delete_cache_age_s: int = 1800           # ... and the age after which an upload is deleted


BOUNDS = Bounds()
