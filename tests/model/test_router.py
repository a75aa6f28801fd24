"""RouterDC model: similarity, routing, save/load round trip, refusal of pickles and foreign folders."""

from __future__ import annotations

import os

import json
import pickle

import numpy as np
import pytest
import torch

from routerdc.checkpoint import CheckpointError, atomic_dir
from routerdc.model.encoder import pool
from routerdc.model.router import RouterConfig, RouterDC

from tests.conftest import LLMS

QUERIES = ["What is 7 * 6?", "Écris une fonction Python.", "中国的首都是哪里？", "🙂 hello\x00world"]


def test_init_and_similarity(minilm_router):
    w = minilm_router.llm_embeddings.weight
    assert w.shape == (len(LLMS), 384)
    assert abs(float(w.std()) - 0.78) < 0.25  # N(0, 0.78) init
    q = torch.randn(3, 384)
    sims = minilm_router.similarities(q)
    expected = torch.nn.functional.cosine_similarity(q[:, None], w[None], dim=-1)
    torch.testing.assert_close(sims, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(minilm_router.logits(q, temperature=0.5), sims / 0.5)


def test_route_probabilities(minilm_router):
    r = minilm_router.route(QUERIES)
    assert r.probs.shape == (4, len(LLMS))
    np.testing.assert_allclose(r.probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(r.probs, torch.softmax(torch.as_tensor(r.similarities), -1).numpy(), rtol=1e-5)
    recs = r.records(QUERIES)
    assert [x["query"] for x in recs] == QUERIES and all(x["llm"] in LLMS for x in recs)
    # Sorting by length for batching must not change any query's result.
    single = minilm_router.route([QUERIES[2]])
    np.testing.assert_allclose(single.probs[0], r.probs[2], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("similarity", ["cos", "dot"])
def test_numpy_routing_rule_matches_torch(minilm_router, similarity):
    from routerdc.routing import route_embeddings

    cfg = RouterConfig(LLMS, similarity=similarity, temperature=0.7)
    router = RouterDC(cfg, minilm_router.encoder, minilm_router.tokenizer)
    emb = 0.05 * np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32)  # dot: unsaturated
    keys = router.llm_embeddings.weight.detach().numpy()
    a, b = route_embeddings(emb, keys, cfg), router.route_embeddings(emb)
    np.testing.assert_allclose(a.similarities, b.similarities, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.probs, b.probs, rtol=1e-4, atol=1e-6)
    assert a.llms == b.llms
    hot = route_embeddings(emb, keys, cfg, temperature=0.01).probs
    assert (hot.max(1) > a.probs.max(1)).all()
    with pytest.raises(ValueError, match="must be"):
        route_embeddings(emb[:, :10], keys, cfg)


def test_pooling_modes():
    h = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(h, mask, "cls"), h[:, 0])
    torch.testing.assert_close(pool(h, mask, "mean")[0], h[0, :2].mean(0))
    with pytest.raises(ValueError, match="pooling"):
        pool(h, mask, "max")


def test_config_validation():
    with pytest.raises(ValueError, match="unique"):
        RouterConfig(llm_names=("a", "a"))
    with pytest.raises(ValueError, match="temperature"):
        RouterConfig(llm_names=("a",), temperature=0)
    with pytest.raises(ValueError, match="similarity"):
        RouterConfig(llm_names=("a",), similarity="l2")


def test_save_load_round_trip(minilm_router, tmp_path):
    folder = minilm_router.save_pretrained(tmp_path / "r", recipe={"steps": 3}, metrics={"train/avg": 1.0})
    meta = json.loads((folder / "config.json").read_text())
    assert meta["router"]["llm_names"] == list(LLMS) and meta["router"]["pooling"] == "cls"
    assert meta["recipe"] == {"steps": 3} and meta["encoder_weights"] == "included"
    assert not list(folder.glob("*.bin"))
    loaded = RouterDC.from_pretrained(folder)
    np.testing.assert_allclose(loaded.route(QUERIES).probs, minilm_router.route(QUERIES).probs, rtol=1e-5, atol=1e-6)
    assert loaded.meta.metrics == {"train/avg": 1.0}


def test_save_fp16_sharded_and_reference(minilm_router, tmp_path):
    folder = minilm_router.save_pretrained(tmp_path / "h", dtype=torch.float16, max_shard_size="20MB")
    assert len(list(folder.glob("model-*.safetensors"))) >= 2 and (folder / "model.safetensors.index.json").exists()
    half = RouterDC.from_pretrained(folder)
    np.testing.assert_allclose(half.route(QUERIES).probs, minilm_router.route(QUERIES).probs, atol=2e-3)
    ref = minilm_router.save_pretrained(tmp_path / "ref", include_encoder=False)
    assert (ref / "model.safetensors").stat().st_size < 100_000
    np.testing.assert_allclose(RouterDC.from_pretrained(ref).route(QUERIES).probs,
                               minilm_router.route(QUERIES).probs, rtol=1e-5, atol=1e-6)


def test_refuses_pickle_and_foreign(tmp_path, minilm_router):
    pk = tmp_path / "pickled"
    pk.mkdir()
    (pk / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match=r"not a RouterDC checkpoint.*pytorch_model.bin.*never loaded"):
        RouterDC.from_pretrained(pk)
    # A real router folder whose safetensors were replaced by a pickle.
    folder = minilm_router.save_pretrained(tmp_path / "r", include_encoder=False)
    (folder / "model.safetensors").unlink()
    torch.save(minilm_router.state_dict(), folder / "model.pt")
    with pytest.raises(CheckpointError, match=r"only pickled weights \['model.pt'\].*safetensors only"):
        RouterDC.from_pretrained(folder)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a RouterDC config"):
        RouterDC.from_pretrained(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        RouterDC.from_pretrained(tmp_path / "nothing")


def test_refuses_corrupt_or_mismatched(tmp_path, minilm_router):
    folder = minilm_router.save_pretrained(tmp_path / "r", include_encoder=False)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        RouterDC.from_pretrained(folder)
    other = RouterDC(RouterConfig(llm_names=("x", "y")), minilm_router.encoder, minilm_router.tokenizer)
    folder2 = other.save_pretrained(tmp_path / "o", include_encoder=False)
    meta = json.loads((folder2 / "config.json").read_text())
    meta["router"]["llm_names"] = ["x", "y", "z"]
    (folder2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        RouterDC.from_pretrained(folder2)


def test_atomic_dir_keeps_previous_on_failure(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("cancelled mid-write")
    assert (final / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp leftovers
    umask = os.umask(0)
    os.umask(umask)
    assert (final.stat().st_mode & 0o777) == (0o777 & ~umask)  # not mkdtemp's 0700
    assert ((final / "a.txt").stat().st_mode & 0o777) == (0o666 & ~umask)
    with atomic_dir(final) as d:
        (d / "b.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_embedding_cache_round_trip(minilm_router, tmp_path):
    from routerdc.inference.embed_cache import cached_embeddings, encoder_key

    assert encoder_key(minilm_router).startswith("all-MiniLM-L6-v2|pool=cls")
    first = cached_embeddings(minilm_router, QUERIES, cache_dir=tmp_path)
    files = list(tmp_path.glob("emb-*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(cached_embeddings(minilm_router, QUERIES, cache_dir=tmp_path), first)
    np.testing.assert_allclose(first, minilm_router.embed_texts(QUERIES, project=False), rtol=1e-5, atol=1e-6)
    files[0].write_bytes(b"damaged")  # a damaged entry is recomputed, not trusted
    np.testing.assert_allclose(cached_embeddings(minilm_router, QUERIES, cache_dir=tmp_path), first, rtol=1e-5, atol=1e-6)
    assert len(list(tmp_path.glob("emb-*.npy"))) == 1
    cached_embeddings(minilm_router, QUERIES[:2], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("emb-*.npy"))) == 2


def test_trained_router_embeddings_are_cached_by_content(tmp_path):
    """A fine-tuned router has no encoder_key; checkpoint_key identifies it by its bytes."""
    import shutil

    import torch

    from routerdc.evaluate.evaluator import router_choices
    from routerdc.data import ScoreSet
    from routerdc.inference.embed_cache import checkpoint_key, encoder_key
    from routerdc.model.router import RouterDC

    torch.manual_seed(0)
    router = RouterDC.build(["a", "b", "c"])
    folder = router.save_pretrained(tmp_path / "r")
    loaded = RouterDC.from_pretrained(folder)
    assert encoder_key(loaded) is None
    key = checkpoint_key(folder)
    shutil.copytree(folder, tmp_path / "copy")
    assert checkpoint_key(tmp_path / "copy") == key
    s = ScoreSet(task="t", metric="probability", queries=tuple(QUERIES), llms=("a", "b", "c"),
                 scores=np.random.default_rng(0).random((len(QUERIES), 3)))
    plain = router_choices(loaded, [s])
    cached = router_choices(loaded, [s], key=key, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("emb-*.npy"))) == 1
    np.testing.assert_array_equal(plain[0], cached[0])
    np.testing.assert_array_equal(router_choices(loaded, [s], key=key, cache_dir=str(tmp_path / "cache"))[0], plain[0])
    with torch.no_grad():  # new weights, new key
        loaded.encoder.embeddings.word_embeddings.weight[0, 0] += 1.0
    loaded.save_pretrained(tmp_path / "r2")
    assert checkpoint_key(tmp_path / "r2") != key


def test_embedding_key_ignores_the_fleet_and_offsets_but_not_the_encoder(tmp_path):
    """Routers that share an encoder share cached embeddings, whatever their LLMs, keys or offsets."""
    import dataclasses

    import torch

    from routerdc.inference.embed_cache import embedding_key, encoder_key
    from routerdc.model.router import RouterDC

    torch.manual_seed(0)
    a = RouterDC.from_pretrained(RouterDC.build(["a", "b", "c"]).save_pretrained(tmp_path / "abc"))
    b = RouterDC(dataclasses.replace(a.config, llm_names=("x", "y"), llm_bias=(0.1, -0.1)), a.encoder, a.tokenizer)
    b.meta = a.meta  # loaded from the same fine-tuned checkpoint
    assert encoder_key(a) is None and embedding_key(a).startswith("encoder:")
    assert embedding_key(b) == embedding_key(a)  # another fleet, fresh keys, offsets: same embeddings
    c = RouterDC.from_pretrained(tmp_path / "abc")
    with torch.no_grad():
        c.encoder.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert embedding_key(c) != embedding_key(a)
    frozen = RouterDC.build(["a", "b"])
    from routerdc.checkpoint import RouterMeta

    frozen.meta = RouterMeta(router=frozen.config.to_dict(), encoder_weights="reference")
    assert embedding_key(frozen) == encoder_key(frozen)


def test_text_normalization_modes(minilm_router):
    from routerdc.model.encoder import normalize_texts

    tok = minilm_router.tokenizer
    text = "中国的首都是哪里？ ok"
    assert normalize_texts([text], "none") == [text]
    ascii_only = normalize_texts([text], "anyascii")[0]
    assert ascii_only.isascii() and "Zhong" in ascii_only
    partial = normalize_texts([text], "translit-unk", tok)[0]
    assert "中" in partial and "shou" in partial  # known characters kept, unknown ones transliterated
    ids = tok(partial)["input_ids"]
    assert tok.unk_token_id not in ids
    with pytest.raises(ValueError, match="normalization"):
        normalize_texts([text], "pinyin")
    with pytest.raises(ValueError, match="normalization"):
        RouterConfig(llm_names=("a",), normalization="pinyin")
