"""Atomic writes with fsync, sweeping crash left-overs, and never losing a better router (item 9, 13)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from routerdc import io
from routerdc.checkpoint import list_routers, write_json


def _age(p, seconds=3600):
    t = time.time() - seconds
    os.utime(p, (t, t))


def test_atomic_file_and_dir_fsync_the_file_and_the_folder(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    io.write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello" and len(synced) >= 2  # the file, then its folder
    synced.clear()
    with io.atomic_dir(tmp_path / "router") as d:
        (d / "x.bin").write_bytes(b"1")
        (d / "sub").mkdir()
        (d / "sub" / "y.bin").write_bytes(b"2")
    assert (tmp_path / "router" / "sub" / "y.bin").read_bytes() == b"2"
    assert len(synced) >= 5  # 2 files, 2 folders inside, the parent after the rename
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_every_writer_goes_through_the_one_atomic_path(tmp_path, monkeypatch):
    from routerdc.data.formats import write_jsonl
    from routerdc.data.scoreset import ScoreSet

    calls: list[str] = []
    real = io.atomic_file

    def spy(path, *a, **k):
        calls.append(os.path.basename(path))
        return real(path, *a, **k)

    monkeypatch.setattr(io, "atomic_file", spy)
    write_json(tmp_path / "c.json", {"a": 1})
    s = ScoreSet(task="t", metric="multi_attempt", llms=("a", "b"), queries=("q",),
                 scores=np.ones((1, 2), np.float32))
    write_jsonl([s], tmp_path / "d.jsonl")
    from routerdc.inference.embedding_map import EmbeddingMap, save_map

    save_map(EmbeddingMap(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32), np.zeros((1, 2), np.float32),
                          "pca"), tmp_path / "m.npz")
    assert calls == ["c.json", "d.jsonl", "m.npz"]


def test_sweep_removes_stale_leftovers_and_restores_an_orphaned_old_copy(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    write_json(good / "config.json", {"format": "routerdc"})
    tmp = tmp_path / ".good.tmp-abc123"
    tmp.mkdir()
    (tmp / "config.json").write_text("{}")
    orphan = tmp_path / ".lost.old-xyz789"  # a crash between the two renames: the only copy of `lost`
    orphan.mkdir()
    (orphan / "config.json").write_text(json.dumps({"format": "routerdc"}))
    fresh = tmp_path / ".good.tmp-fresh1"  # a write in progress elsewhere: too young to sweep
    fresh.mkdir()
    for p in (tmp, orphan):
        _age(p)
    assert [p.name for p in list_routers(tmp_path, sweep=False)] == ["good"]  # never listed, even unswept
    io.sweep_stale(tmp_path)
    assert not tmp.exists() and fresh.exists() and (tmp_path / "lost" / "config.json").exists()
    assert sorted(p.name for p in list_routers(tmp_path)) == ["good", "lost"]


@pytest.mark.parametrize("name,leftover", [(".out.tmp-k2j3_x", True), (".out.old-8d7f", True),
                                           (".emb-1.npy.1234.tmp", True), ("my-router", False),
                                           (".hidden", False)])
def test_leftover_names(name, leftover):
    assert io.is_leftover(name) is leftover


def test_a_new_run_keeps_a_better_existing_router(tmp_path, tiny_set):
    from routerdc.train.trainer import TrainConfig, Trainer

    out = tmp_path / "r"
    cfg = TrainConfig(output_dir=str(out), freeze_encoder=True, steps=2, batch_size=8, eval_every=1,
                      samples_per_task=16, device="cpu")
    first = Trainer(cfg, train_sets=[tiny_set], test_sets=[]).run()
    assert first.output_dir == out
    meta = json.loads((out / "config.json").read_text())
    meta["metrics"]["train/avg"] = 1000.0  # better than any run can be
    (out / "config.json").write_text(json.dumps(meta))
    before = (out / "model.safetensors").read_bytes()
    again = Trainer(cfg, train_sets=[tiny_set], test_sets=[]).run()
    assert again.output_dir is None and again.kept_existing == 1000.0
    assert (out / "model.safetensors").read_bytes() == before
    forced = Trainer(cfg, train_sets=[tiny_set], test_sets=[], overwrite=True).run()
    assert forced.output_dir == out
    assert json.loads((out / "config.json").read_text())["metrics"]["train/avg"] < 1000


def test_a_run_refuses_a_folder_that_is_not_a_router(tmp_path, tiny_set):
    from routerdc.train.trainer import TrainConfig, Trainer

    out = tmp_path / "docs"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    cfg = TrainConfig(output_dir=str(out), freeze_encoder=True, steps=1, batch_size=8, samples_per_task=8,
                      device="cpu")
    with pytest.raises(ValueError, match="--overwrite"):
        Trainer(cfg, train_sets=[tiny_set], test_sets=[]).run()
    assert (out / "notes.txt").read_text() == "keep me"


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_the_engine_measurement_stops_when_the_app_that_started_it_is_killed(tmp_path):
    """The app measures `auto` in a child (`python -m routerdc.inference ... --exit-with-parent`); a
    `kill -9` of the app must not leave that child measuring on its own."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "routerdc-minilm"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         f"c = subprocess.Popen([sys.executable, '-m', 'routerdc.inference', {str(shipped)!r}, '--exit-with-parent',"
         f" '--cache-dir', {str(tmp_path)!r}])\n"
         "print(c.pid, flush=True)\n"
         "time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)
        assert _alive(child)  # measuring (loading the router) while the app lives
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 15
        while _alive(child) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the measuring child outlived the killed app"
    finally:
        parent.kill()
        if child is not None and _alive(child):
            os.kill(child, 9)
