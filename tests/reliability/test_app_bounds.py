"""App-side bounds and statuses that need no server: upload size and rows, a data dir that is
missing or unreadable (issue 15: bounds; faults)."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("gradio")
import gradio as gr  # noqa: E402

from routerdc.limits import Bounds  # noqa: E402


def test_uploads_over_the_byte_or_row_bound_are_refused(tmp_path, monkeypatch):
    from app import common

    p = tmp_path / "rows.jsonl"
    p.write_text("\n".join(json.dumps({"query": f"q{i}", "scores": {"a": 1, "b": 0}}) for i in range(5)),
                 encoding="utf-8")
    assert len(common.load_upload(str(p))[0]) == 5
    monkeypatch.setattr(common, "BOUNDS", Bounds(max_upload_rows=4))
    with pytest.raises(gr.Error, match="5 rows; an uploaded score file may have at most 4"):
        common.load_upload(str(p))
    monkeypatch.setattr(common, "BOUNDS", Bounds(max_upload_bytes=10))
    with pytest.raises(gr.Error, match="may have at most"):
        common.load_upload(str(p))


def test_a_missing_or_unreadable_data_dir_is_a_clear_status(tmp_path, monkeypatch):
    from app.services.data import DataBank

    bank = DataBank.load(str(tmp_path / "nope"))
    assert not bank.entries and "does not exist" in bank.errors[0]
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    bank = DataBank.load(str(tmp_path))
    assert not bank.entries and "not readable" in bank.errors[0] and str(tmp_path) not in bank.errors[0]
