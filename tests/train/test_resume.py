"""Resumable training (routerdc.train.resume): a run cancelled at step k and resumed is the run never
stopped; the state lives beside the router, is written atomically, and is refused when it does not fit."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch

from routerdc.data import load_score_set, paper_files
from routerdc.model.router import RouterDC
from routerdc.train.batching import length_grouped_batches
from routerdc.train.resume import (ResumeError, flatten_optimizer, has_state, load_state, resume_dir, save_state,
                                   unflatten_optimizer)
from routerdc.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def small_sets(data_dir):
    """24 training rows from each of 3 tasks, 20 MMLU test rows."""
    train_files, test_files = paper_files(data_dir)
    rng = np.random.default_rng(0)
    pick = lambda s, n: s.subset(np.sort(rng.choice(len(s), n, replace=False)))  # noqa: E731
    return [pick(load_score_set(f), 24) for f in train_files[:3]], [pick(load_score_set(test_files[0]), 20)]


def _frozen(out, **changes) -> TrainConfig:
    return TrainConfig(output_dir=str(out), **{**dict(steps=10, batch_size=8, freeze_encoder=True, projection=True,
                                                      samples_per_task=16, eval_every=3, seed=1, tie_break="random"),
                                               **changes})


def _cancel_at(k):
    evt = threading.Event()
    return evt, (lambda step, losses, metrics: step == k and evt.set())


def _run(cfg, sets, **kwargs):
    return train(cfg, train_sets=sets[0], test_sets=sets[1], **kwargs)


def _assert_same_run(a, b, tol=1e-5):
    assert [h["step"] for h in a.history] == [h["step"] for h in b.history]
    for x, y in zip(a.history, b.history):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], abs=tol), (x["step"], key)
    assert (a.best_step, a.best_score) == (b.best_step, pytest.approx(b.best_score, abs=tol))


def _assert_same_tensors(a: dict, b: dict, tol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=tol, rtol=0, msg=k)


def test_frozen_run_cancelled_and_resumed_is_the_run_never_stopped(small_sets, tmp_path):
    full = _run(_frozen(tmp_path / "full"), small_sets, keep_resume=True)
    cancel, on_step = _cancel_at(4)
    part = _run(_frozen(tmp_path / "part"), small_sets, cancel=cancel, on_step=on_step)
    assert part.cancelled and part.steps_done == 4 and part.resume_dir == tmp_path / "part.resume"
    # beside the router, not in it: a shipped router carries no optimizer state
    assert has_state(tmp_path / "part") and sorted(p.name for p in part.resume_dir.iterdir()) == [
        "state.json", "tensors.safetensors"]
    assert not any("resume" in p.name or p.name == "tensors.safetensors" for p in (tmp_path / "part").rglob("*"))
    assert load_state(part.resume_dir).step == 4

    seen = []
    rest = _run(_frozen(tmp_path / "part"), small_sets, resume=True, keep_resume=True,
                on_step=lambda s, l, m: seen.append(s))
    assert seen == list(range(5, 11)) and rest.resumed_from == 4 and rest.steps_done == 10
    _assert_same_run(full, rest)
    a, b = load_state(resume_dir(tmp_path / "full")), load_state(resume_dir(tmp_path / "part"))
    assert a.step == b.step == 10
    _assert_same_tensors(a.model, b.model)  # the current weights (not only the best router)
    for pid in a.optimizer["state"]:
        _assert_same_tensors(a.optimizer["state"][pid], b.optimizer["state"][pid])
    assert torch.equal(a.rng["gen"], b.rng["gen"])
    _assert_same_tensors(RouterDC.from_pretrained(tmp_path / "full").state_dict(),
                         RouterDC.from_pretrained(tmp_path / "part").state_dict())


def test_trainable_encoder_run_resumes_exactly(small_sets, tmp_path):
    """Dropout draws from torch's global generator: its state is part of the resume state."""
    cfg = dict(steps=4, batch_size=8, samples_per_task=8, max_length=32, lr=1e-4, eval_every=0,
               eval_max_per_task=4, seed=2)
    full = _run(TrainConfig(output_dir=str(tmp_path / "full"), **cfg), small_sets)
    cancel, on_step = _cancel_at(2)
    part = _run(TrainConfig(output_dir=str(tmp_path / "part"), **cfg), small_sets, cancel=cancel, on_step=on_step)
    assert part.cancelled and part.output_dir is None and has_state(tmp_path / "part")
    assert any(k.startswith("encoder.") for k in load_state(part.resume_dir).model)
    rest = _run(TrainConfig(output_dir=str(tmp_path / "part"), **cfg), small_sets, resume=True)
    _assert_same_run(full, rest)
    _assert_same_tensors(RouterDC.from_pretrained(tmp_path / "full").state_dict(),
                         RouterDC.from_pretrained(tmp_path / "part").state_dict())
    assert not has_state(tmp_path / "part") and rest.resume_dir is None  # finished: nothing left to resume


def test_a_finished_run_removes_its_state_and_can_be_extended_when_kept(small_sets, tmp_path):
    done = _run(_frozen(tmp_path / "done", steps=3), small_sets)
    assert not done.cancelled and not resume_dir(tmp_path / "done").exists()

    cancel, on_step = _cancel_at(4)
    _run(_frozen(tmp_path / "ext", steps=8), small_sets, cancel=cancel, on_step=on_step)
    longer = _run(_frozen(tmp_path / "ext", steps=12), small_sets, resume=True)  # --steps extends the run
    _assert_same_run(_run(_frozen(tmp_path / "twelve", steps=12), small_sets), longer)
    assert not resume_dir(tmp_path / "ext").exists()

    _run(_frozen(tmp_path / "kept", steps=4), small_sets, keep_resume=True)
    with pytest.raises(ResumeError, match=r"stopped after step 4, so steps=4 leaves nothing to do"):
        _run(_frozen(tmp_path / "kept", steps=4), small_sets, resume=True)
    more = _run(_frozen(tmp_path / "kept", steps=6), small_sets, resume=True)
    assert more.steps_done == 6 and [h["step"] for h in more.history] == list(range(1, 7))


def test_resume_refuses_another_recipe_other_data_and_no_state(small_sets, tmp_path):
    cancel, on_step = _cancel_at(2)
    _run(_frozen(tmp_path / "r"), small_sets, cancel=cancel, on_step=on_step)
    with pytest.raises(ResumeError, match=r"r\.resume: the recipe differs .*lam: 1\.0 in the state, 0\.5 now"):
        _run(_frozen(tmp_path / "r", lam=0.5), small_sets, resume=True)
    with pytest.raises(ResumeError, match="data differ"):
        train(_frozen(tmp_path / "r"), train_sets=small_sets[0][:2], test_sets=small_sets[1], resume=True)
    with pytest.raises(ResumeError, match=r"nothing to resume: .*other\.resume does not exist"):
        _run(_frozen(tmp_path / "other"), small_sets, resume=True)
    # a fresh run does not silently discard the state of a stopped one
    with pytest.raises(ResumeError, match="pass --resume to continue it, or --overwrite"):
        _run(_frozen(tmp_path / "r"), small_sets)
    assert load_state(resume_dir(tmp_path / "r")).step == 2
    _run(_frozen(tmp_path / "r", steps=2), small_sets, overwrite=True)
    assert not resume_dir(tmp_path / "r").exists()


def test_malformed_or_foreign_state_is_refused_and_nothing_is_lost(small_sets, tmp_path):
    cancel, on_step = _cancel_at(4)
    _run(_frozen(tmp_path / "m"), small_sets, cancel=cancel, on_step=on_step)
    folder = resume_dir(tmp_path / "m")
    good = tmp_path / "good"
    shutil.copytree(folder, good)
    router_before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "m").iterdir())
    doc = json.loads((good / "state.json").read_text())

    def broken(text=None, tensors=None):
        shutil.rmtree(folder)
        shutil.copytree(good, folder)
        if text is not None:
            (folder / "state.json").write_text(text)
        if tensors is not None:
            (folder / "tensors.safetensors").write_bytes(tensors)

    cases = [
        (dict(text="{"), r"state\.json: unreadable resume state"),
        (dict(text=json.dumps({**doc, "format": "something-else"})), "not a RouterDC resume state"),
        (dict(text=json.dumps({**doc, "version": 99})), "resume state version 99; this RouterDC reads version 1"),
        (dict(text=json.dumps({k: v for k, v in doc.items() if k != "optimizer"})),
         "malformed resume state .*optimizer"),
        (dict(tensors=(good / "tensors.safetensors").read_bytes()[:100]), r"tensors\.safetensors: unreadable tensors"),
    ]
    for change, message in cases:
        broken(**change)
        with pytest.raises(ResumeError, match=message):
            _run(_frozen(tmp_path / "m"), small_sets, resume=True)
    # tensors of the wrong shape, consistent with their listing: refused when fitted to the model
    broken()
    state = load_state(folder)
    name = next(iter(state.model))
    state.model[name] = torch.zeros(3, 3)
    save_state(folder, state)
    with pytest.raises(ResumeError, match=rf"saved weights do not fit this model.*{name}"):
        _run(_frozen(tmp_path / "m"), small_sets, resume=True)
    # nothing was lost: the router is as it was, and the good state still resumes
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "m").iterdir()) == router_before
    broken()
    assert _run(_frozen(tmp_path / "m"), small_sets, resume=True).steps_done == 10


def test_a_failure_while_writing_the_state_leaves_the_previous_one(small_sets, tmp_path, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file
    calls = []

    def fail_on_second(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)  # the new tensors are written in the temporary folder...
        calls.extend([path] if str(path).endswith("/tensors.safetensors") else [])  # the state's, not the router's
        if len(calls) == 2:
            raise OSError("disk full")  # ...and the write fails before the folder replaces the old one

    monkeypatch.setattr(safetensors.torch, "save_file", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        _run(_frozen(tmp_path / "a"), small_sets)
    assert load_state(resume_dir(tmp_path / "a")).step == 3  # the state of the first evaluation, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a.resume"]  # no temporary left-over
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert _run(_frozen(tmp_path / "a"), small_sets, resume=True).steps_done == 10


def test_sampler_and_optimizer_round_trip():
    lengths = list(range(1, 30))
    gen = torch.Generator().manual_seed(3)
    it = length_grouped_batches(lengths, 4, window=2, generator=gen)
    for _ in range(9):  # into the second epoch
        next(it)
    epoch, given = it.position()
    saved_gen = gen.get_state()
    expected = [next(it) for _ in range(20)]
    again = length_grouped_batches(lengths, 4, window=2, generator=gen)
    gen.set_state(saved_gen)
    again.restore(epoch, given)
    assert [next(again) for _ in range(20)] == expected
    with pytest.raises(ValueError, match="does not fit 29 rows in batches of 5"):
        length_grouped_batches(lengths, 5).restore(epoch, given)

    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.AdamW([{"params": [p], "lr": 0.1}], weight_decay=0.01)
    for _ in range(3):
        (p ** 2).sum().backward()
        opt.step()
    tensors, desc = flatten_optimizer(opt.state_dict())
    assert set(tensors) == {"optim.0.step", "optim.0.exp_avg", "optim.0.exp_avg_sq"}
    back = unflatten_optimizer(tensors, json.loads(json.dumps(desc)))
    assert back["param_groups"] == opt.state_dict()["param_groups"]
    _assert_same_tensors(back["state"][0], opt.state_dict()["state"][0], tol=0)
