"""The ONNX form of a router: exported from torch, it tokenises and embeds as torch does, routes
the same, runs without importing torch, and refuses broken folders clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routerdc.inference import onnx as onnx_engine
from routerdc.inference.onnx import ONNX_FILES, OnnxError, OnnxRouter, export_onnx

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "routerdc-minilm"
AWKWARD = [
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳",
    "word " * 700,  # left truncation to 512 tokens
    "🙂🙂 emoji only",
    "tab\tand\x07bell and\nnewline",
    "x",
]


@pytest.fixture(scope="module")
def shipped():
    from routerdc.model.router import RouterDC

    return RouterDC.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def exported(shipped, tmp_path_factory):
    return export_onnx(shipped, tmp_path_factory.mktemp("onnx") / "shipped")


def test_export_writes_one_complete_folder(exported):
    # the shipped router has the novelty fallback: its bank goes with the graph
    assert sorted(p.name for p in exported.iterdir()) == sorted((*ONNX_FILES, "novelty.safetensors"))
    assert not list(exported.parent.glob(".*tmp*"))  # the temporary folder was renamed into place


def test_tokenises_as_transformers_does(shipped, exported):
    engine = OnnxRouter.load(exported)
    for text in AWKWARD:
        ref = shipped.tokenize([text])
        ids, mask = engine.tokenize(engine.prepare_texts([text]))
        np.testing.assert_array_equal(ids, ref["input_ids"].numpy(), err_msg=text[:30])
        np.testing.assert_array_equal(mask, ref["attention_mask"].numpy())
    ids, _ = engine.tokenize(["word " * 700])
    assert ids.shape == (1, 512) and ids[0, 0] == shipped.tokenizer.cls_token_id
    ids, mask = engine.tokenize(["a", "a much longer query with many words"])  # padded to the longest
    assert mask[0].sum() < mask[1].sum() == ids.shape[1]


def test_embeds_and_routes_as_torch_does(shipped, exported):
    engine = OnnxRouter.load(exported, threads=1)
    fast, slow = engine.embed_texts(AWKWARD, batch_size=4), shipped.embed_texts(AWKWARD)
    np.testing.assert_allclose(fast, slow, atol=1e-4)
    a, b = engine.route(AWKWARD), shipped.route(AWKWARD)
    assert engine.config.llm_bias == shipped.config.llm_bias  # the calibrated offsets travel too
    assert a.llms == b.llms and a.llm_names == b.llm_names
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    hot = engine.route(AWKWARD[:2], temperature=0.05).probs
    assert hot.max() > a.probs[:2].max()  # a lower temperature sharpens
    assert engine.embed_texts([]).shape == (0, engine.dim)


def test_routes_without_importing_torch(exported):
    code = ("import sys; from routerdc.inference.onnx import OnnxRouter; "
            f"r = OnnxRouter.load({str(exported)!r}).route(['What is 2 + 2?']); "
            "print(r.llms[0]); assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in OnnxRouter.load(exported).config.llm_names


def test_translit_unk_normalisation_is_applied(minilm_router, tmp_path):
    from routerdc.model.router import RouterDC

    router = RouterDC(minilm_router.config.__class__(**{**minilm_router.config.to_dict(),
                                                        "normalization": "translit-unk"}),
                      minilm_router.encoder, minilm_router.tokenizer)
    router.load_state_dict(minilm_router.state_dict())
    engine = OnnxRouter.load(export_onnx(router, tmp_path / "translit"))
    text = ["以下哪个城市是中国的首都"]
    assert engine.prepare_texts(text) == router.prepare_texts(text) != text
    np.testing.assert_allclose(engine.embed_texts(text), router.embed_texts(text), atol=1e-4)


def test_failed_check_leaves_nothing(shipped, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_engine, "TOLERANCE", -1.0)
    with pytest.raises(OnnxError, match="is off by"):
        export_onnx(shipped, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_broken_folders_are_refused(exported, tmp_path):
    with pytest.raises(OnnxError, match=r"not an ONNX router folder \(missing \['encoder.onnx'"):
        OnnxRouter.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ONNX_FILES:
        (broken / name).write_bytes((exported / name).read_bytes() if name != "encoder.onnx" else b"not onnx")
    with pytest.raises(OnnxError, match="cannot load the ONNX router"):
        OnnxRouter.load(broken)
    (broken / "encoder.onnx").write_bytes((exported / "encoder.onnx").read_bytes())
    np.save(broken / "llm_keys.npy", np.zeros((2, 384), dtype=np.float32))
    with pytest.raises(OnnxError, match="2 LLM keys for 7 LLMs"):
        OnnxRouter.load(broken)
