"""Fleet changes without retraining the encoder (routerdc.train.fleet, add-llm / remove-llm).

A hand-built toy with a known answer: a frozen-MiniLM router whose two keys sit on history and
cooking queries; a third LLM that is the only one to score on arithmetic is added from scores
alone and must take the arithmetic queries, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routerdc.data import ScoreSet, write_jsonl
from routerdc.train.fleet import FleetError, add_llm, remove_llm

ROOT = Path(__file__).resolve().parents[2]
TOPICS = {
    "history": ["Who was the first emperor of Rome?", "When did the Second World War end?",
                "Which empire built Machu Picchu?", "Who signed the Magna Carta in 1215?",
                "What caused the fall of the Western Roman Empire?", "Who was Napoleon Bonaparte?"],
    "cooking": ["How long should I boil an egg for a runny yolk?", "What temperature do I bake bread at?",
                "How do I make a simple tomato sauce for pasta?", "What spices go into a curry?",
                "How do I caramelise onions in a pan?", "How long do I roast a chicken?"],
    "math": ["What is 12 times 7?", "Compute 345 plus 678.", "What is the square root of 144?",
             "Solve for x: 3x + 5 = 20.", "What is 15 percent of 200?", "Divide 81 by 9."],
}
BEST = {"history": "a", "cooking": "b", "math": "c"}


def _set(llms: tuple[str, ...], topics=tuple(TOPICS)) -> ScoreSet:
    queries = [q for t in topics for q in TOPICS[t]]
    scores = np.asarray([[1.0 if BEST[t] == n else 0.0 for n in llms] for t in topics for _ in TOPICS[t]],
                        dtype=np.float32)
    return ScoreSet(task="toy", metric="probability", llms=llms, queries=tuple(queries), scores=scores,
                    source="toy.jsonl")


@pytest.fixture(scope="module")
def two_llm_router(tmp_path_factory):
    """A frozen-encoder router over a, b with keys on the history and cooking queries."""
    import torch

    from routerdc.model.router import RouterDC

    r = RouterDC.build(("a", "b"), seed=0)
    with torch.no_grad():
        for i, topic in enumerate(("history", "cooking")):
            r.llm_embeddings.weight[i] = torch.as_tensor(r.embed_texts(TOPICS[topic]).mean(0))
    folder = tmp_path_factory.mktemp("fleet") / "ab"
    r.save_pretrained(folder, include_encoder=False)
    return folder


def _routed(folder: Path, topic: str) -> list[str]:
    from routerdc.model.router import RouterDC

    return RouterDC.from_pretrained(folder).route(TOPICS[topic]).llms


def test_an_added_llm_takes_exactly_the_queries_it_is_best_at(two_llm_router, tmp_path):
    assert set(_routed(two_llm_router, "math")) <= {"a", "b"}
    change = add_llm(two_llm_router, "c", [_set(("a", "b", "c"))], output=tmp_path / "abc",
                     cache_dir=tmp_path / "cache", steps=200)
    assert change.llm_names == ("a", "b", "c") and change.loss is not None
    for topic, best in BEST.items():
        assert _routed(tmp_path / "abc", topic) == [best] * len(TOPICS[topic]), topic
    cfg = json.loads((tmp_path / "abc" / "config.json").read_text())
    assert cfg["router"]["llm_names"] == ["a", "b", "c"] and len(cfg["router"]["llm_bias"]) == 3
    assert cfg["fleet_changes"][-1]["op"] == "add" and cfg["fleet_changes"][-1]["llm"] == "c"
    assert cfg["calibration"]["train_avg_after"] == pytest.approx(100.0)
    # the encoder and the old keys are untouched
    from routerdc.model.router import RouterDC

    old, new = RouterDC.from_pretrained(two_llm_router), RouterDC.from_pretrained(tmp_path / "abc")
    np.testing.assert_array_equal(new.llm_embeddings.weight[:2].detach().numpy(),
                                  old.llm_embeddings.weight.detach().numpy())
    assert cfg["encoder_weights"] == "reference"


def test_a_removed_llm_is_never_picked_and_the_others_keep_theirs(two_llm_router, tmp_path):
    add_llm(two_llm_router, "c", [_set(("a", "b", "c"))], output=tmp_path / "abc", cache_dir=tmp_path / "cache")
    change = remove_llm(tmp_path / "abc", "b", [_set(("a", "b", "c"))], output=tmp_path / "ac",
                        cache_dir=tmp_path / "cache")
    assert change.llm_names == ("a", "c")
    every = [q for qs in TOPICS.values() for q in qs]
    from routerdc.model.router import RouterDC

    routing = RouterDC.from_pretrained(tmp_path / "ac").route(every)
    assert routing.probs.shape == (len(every), 2) and "b" not in routing.llms
    assert _routed(tmp_path / "ac", "math") == ["c"] * 6 and _routed(tmp_path / "ac", "history") == ["a"] * 6
    cfg = json.loads((tmp_path / "ac" / "config.json").read_text())
    assert [c["op"] for c in cfg["fleet_changes"]] == ["add", "remove"]
    assert cfg["router"]["llm_names"] == ["a", "c"] and len(cfg["router"]["llm_bias"]) == 2


def test_bad_fleet_changes_are_refused_and_write_nothing(two_llm_router, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FleetError, match="already has the LLM 'a'"):
        add_llm(two_llm_router, "a", [_set(("a", "b"))], output=out)
    with pytest.raises(FleetError, match="no score column for the LLM to add, 'c'"):
        add_llm(two_llm_router, "c", [_set(("a", "b"))], output=out)
    with pytest.raises(FleetError, match=r"no score column for the router's LLM\(s\) \['b'\]"):
        add_llm(two_llm_router, "c", [_set(("a", "c"))], output=out)
    with pytest.raises(FleetError, match=r"does not know the LLM\(s\) \['d'\]"):
        add_llm(two_llm_router, "c", [_set(("a", "b", "c", "d"))], output=out)
    with pytest.raises(FleetError, match="has no LLM 'z'"):
        remove_llm(two_llm_router, "z", [_set(("a", "b"))], output=out)
    with pytest.raises(FleetError, match="at least 2 LLMs"):
        remove_llm(two_llm_router, "a", [_set(("a", "b"))], output=out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_commands_write_a_router_that_routes(two_llm_router, tmp_path):
    from routerdc.cli.main import main

    write_jsonl([_set(("a", "b", "c"))], tmp_path / "scores.jsonl")
    assert main(["add-llm", "--checkpoint", str(two_llm_router), "--llm", "c", "--scores",
                 str(tmp_path / "scores.jsonl"), "--output", str(tmp_path / "abc"), "--steps", "100",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["add-llm", "--checkpoint", str(two_llm_router), "--llm", "a", "--scores",
                 str(tmp_path / "scores.jsonl"), "--output", str(tmp_path / "x")]) == 2
    (tmp_path / "queries.txt").write_text("\n".join(TOPICS["math"]) + "\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "routerdc", "route", "--checkpoint", str(tmp_path / "abc"),
                        "--input", str(tmp_path / "queries.txt"), "--output", str(tmp_path / "routes.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "routes.jsonl").read_text().splitlines()]
    assert [x["llm"] for x in lines] == ["c"] * 6 and set(lines[0]["probs"]) == {"a", "b", "c"}
    assert main(["remove-llm", "--checkpoint", str(tmp_path / "abc"), "--llm", "a", "--scores",
                 str(tmp_path / "scores.jsonl"), "--output", str(tmp_path / "bc"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["router"]["llm_names"] == ["b", "c"]


def test_fit_key_minimises_the_sample_llm_loss_over_the_new_key():
    import torch

    from routerdc.train.fleet import fit_key
    from routerdc.model.losses import sample_llm_loss

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    old = rng.normal(size=(3, 8)).astype(np.float32)
    # the new LLM is best where the first coordinate is positive, worst elsewhere
    scores = np.concatenate([rng.uniform(0, 0.4, size=(60, 3)), (emb[:, :1] > 0).astype(np.float32)], axis=1)

    def loss(k: np.ndarray) -> float:  # the objective, written out independently
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
        logits = np.concatenate([unit(emb) @ unit(old).T, (unit(emb) @ unit(k))[:, None]], axis=1) / 0.2
        return float(sample_llm_loss(torch.as_tensor(logits), torch.as_tensor(scores)))

    start = fit_key(emb, old, scores, steps=0, temperature=0.2).loss
    key, end, step, _, _ = fit_key(emb, old, scores, steps=200, temperature=0.2)
    assert key.shape == (8,) and step == 200 and end <= start and end == pytest.approx(loss(key), abs=1e-5)
    assert end < min(loss(rng.normal(size=8).astype(np.float32)) for _ in range(20)) - 0.5
    assert all(end <= loss(key + 0.05 * rng.normal(size=8).astype(np.float32)) + 1e-4 for _ in range(10))  # a minimum
    assert key[0] / np.linalg.norm(key) > 0.8  # it points where the new LLM is best
    # With a selection score the key comes from the best-scoring snapshot (here: the lowest loss).
    picked = fit_key(emb, old, scores, steps=100, temperature=0.2, select=lambda k: -loss(k), select_every=10)
    assert picked.step % 10 == 0 and picked.score == pytest.approx(-picked.loss, abs=1e-5)
    assert picked.loss <= start
    with pytest.raises(FleetError, match="scores must be"):
        fit_key(emb, old, scores[:, :3])


def test_holdout_split_holds_out_a_seeded_fraction_of_every_set():
    from routerdc.train.fleet import holdout_split

    split = holdout_split([10, 3, 1], 0.2, seed=1)
    (f0, h0), (f1, h1), (f2, h2) = split
    assert len(h0) == 2 and len(f0) == 8 and sorted(np.concatenate([f0, h0])) == list(range(10))
    assert len(h1) == 1 and len(f1) == 2  # at least one row held out, never all of them
    assert len(h2) == 0 and list(f2) == [0]
    assert all(np.array_equal(a, b) for x, y in zip(split, holdout_split([10, 3, 1], 0.2, seed=1))
               for a, b in zip(x, y))
    with pytest.raises(ValueError, match="held-out fraction"):
        holdout_split([10], 1.0)


def test_add_llm_can_select_its_key_on_held_out_rows(two_llm_router, tmp_path):
    change = add_llm(two_llm_router, "c", [_set(("a", "b", "c"))], output=tmp_path / "abc",
                     cache_dir=tmp_path / "cache", steps=200, holdout=0.25)
    assert change.llm_names == ("a", "b", "c")
    assert _routed(tmp_path / "abc", "math") == ["c"] * len(TOPICS["math"])
    rec = json.loads((tmp_path / "abc" / "config.json").read_text())["fleet_changes"][-1]
    assert rec["holdout"] == 0.25 and "held-out 0.25" in rec["selected_by"]
