"""Routing with ONNX Runtime: a saved router's encoder as one ONNX graph, run without torch.

Importing torch and transformers 5 costs about 4 s on a 2-core CPU (transformers' model
modules pull in ``torch._dynamo``, ``torch.distributed.tensor``, sympy and scipy), more than
everything else the app does before its first answer. A router that only routes needs none of
it: the tokenizer (``tokenizers``), the encoder graph (``onnxruntime``) and the LLM keys
(numpy) suffice. This module writes and reads that form of a router:

* :func:`export_onnx` (torch side): the encoder + pooling (+ projection) as ``encoder.onnx``
  (inputs ``input_ids`` and ``attention_mask``, ``(B, L)`` int64; output ``embedding``,
  ``(B, d)``), the LLM keys as ``llm_keys.npy``, the tokenizer as ``tokenizer.json`` and the
  router config as ``router.json``, in one atomically written folder. The export is checked
  against torch on a probe batch before the folder appears.
* :class:`OnnxRouter` (no torch): the same ``embed_texts`` / ``route_embeddings`` / ``route``
  as :class:`~routerdc.model.router.RouterDC`, within float rounding of it.

It is a derived, cacheable artefact (about 90 MB for MiniLM in fp32), not a checkpoint: the
safetensors folder stays the source of truth.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from routerdc.checkpoint import RouterMeta, atomic_dir
from routerdc.io import commit_file
from routerdc.model.encoder import normalize_texts, vocab_chars
from routerdc.routing import RouterConfig, Routing, route_embeddings

if TYPE_CHECKING:
    from routerdc.model.router import RouterDC

__all__ = ["OnnxError", "OnnxRouter", "export_onnx", "quantize_onnx_int8", "ONNX_FILES", "INT8_FILE"]

ONNX_FILES = ("encoder.onnx", "llm_keys.npy", "tokenizer.json", "router.json")
INT8_FILE = "encoder.int8.onnx"  # written beside encoder.onnx by quantize_onnx_int8
OPSET = 17
# Export is refused when ONNX Runtime and torch disagree by more than this on the probe batch.
TOLERANCE = 1e-3
_PROBE = ("Which of the following is a prime number? A. 21 B. 27 C. 29 D. 33",
          "def add(a, b): return a + b", "x", "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳 🙂")


class OnnxError(RuntimeError):
    """The ONNX form of a router cannot be written or read."""


def _probe_batch(router: "RouterDC") -> tuple[np.ndarray, np.ndarray]:
    b = router.tokenize(list(_PROBE))
    return b["input_ids"].numpy(), b["attention_mask"].numpy()


def export_onnx(router: "RouterDC", folder: str | os.PathLike) -> Path:
    """Write the ONNX form of ``router`` to ``folder`` (replaced atomically) and return it.

    Raises :class:`OnnxError` when the tokenizer has no ``tokenizers`` backend, the exporter
    fails, or the exported graph does not reproduce torch's embeddings within ``TOLERANCE``.
    """
    import torch

    backend = getattr(router.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise OnnxError(f"the tokenizer of {router.config.encoder!r} has no fast (tokenizers) backend")

    class _Embed(torch.nn.Module):
        def __init__(self, r: "RouterDC") -> None:
            super().__init__()
            self.r = r

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.r.project(self.r.encode(input_ids, attention_mask))

    was_training = router.training
    router.eval()
    folder = Path(folder)
    try:
        with atomic_dir(folder) as tmp:
            # Traced on a padded batch of varied lengths; batch and length axes stay dynamic.
            trace = router.tokenize(["a short query", "a longer query, with a few more words in it"])
            try:
                with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        _Embed(router).eval(), (trace["input_ids"], trace["attention_mask"]), str(tmp / "encoder.onnx"),
                        dynamo=False, opset_version=OPSET, input_names=["input_ids", "attention_mask"],
                        output_names=["embedding"],
                        dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                      "attention_mask": {0: "batch", 1: "length"}, "embedding": {0: "batch"}},
                    )
            except Exception as exc:  # noqa: BLE001 - any exporter failure means: no ONNX form
                raise OnnxError(f"cannot export {router.config.encoder!r} to ONNX: {type(exc).__name__}: {exc}") from exc
            np.save(tmp / "llm_keys.npy", router.llm_embeddings.weight.detach().float().cpu().numpy(),
                    allow_pickle=False)
            backend.save(str(tmp / "tokenizer.json"))
            if router.config.novelty:
                from routerdc.novelty import NOVELTY_FILE, bank_bytes

                (tmp / NOVELTY_FILE).write_bytes(bank_bytes(router.novelty_bank))  # fsynced by atomic_dir
            meta = getattr(router, "meta", None)  # RouterMeta, or None for a router built in memory
            (tmp / "router.json").write_text(json.dumps({
                "router": router.config.to_dict(),
                "pad_token_id": router.tokenizer.pad_token_id or 0,
                "unk_token_id": router.tokenizer.unk_token_id,
                "config": None if meta is None else meta.to_dict(),
            }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            engine = OnnxRouter.load(tmp, threads=1)
            ids, mask = _probe_batch(router)
            with torch.no_grad():
                ref = router.project(router.encode(torch.as_tensor(ids), torch.as_tensor(mask))).float().numpy()
            got = engine.run(ids, mask)
            err = float(np.abs(got - ref).max())
            if not err <= TOLERANCE:
                raise OnnxError(f"the ONNX graph of {router.config.encoder!r} is off by {err:.2e} (> {TOLERANCE})")
            tokens = engine.tokenize(engine.prepare_texts(list(_PROBE)))
            if not (np.array_equal(tokens[0], ids) and np.array_equal(tokens[1], mask)):
                raise OnnxError(f"the tokenizers backend of {router.config.encoder!r} tokenises differently")
    finally:
        router.train(was_training)
    return folder


class OnnxRouter:
    """A router folder written by :func:`export_onnx`, run with ONNX Runtime (no torch)."""

    def __init__(self, folder: Path, session: Any, tokenizer: Any, config: RouterConfig, keys: np.ndarray,
                 unk_id: int | None, meta: "RouterMeta | None", bank: np.ndarray | None = None) -> None:
        self.folder = folder
        self.bank = bank  # the novelty fallback's training queries (routerdc.novelty)
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self.keys = keys
        self.unk_token_id = unk_id
        self.meta = meta
        self._known = vocab_chars(tokenizer) if config.normalization == "translit-unk" else None

    @classmethod
    def load(cls, folder: str | os.PathLike, *, threads: int = 0, model_file: str = "encoder.onnx",
             optimization: str = "all", inter_op_threads: int = 1) -> "OnnxRouter":
        """Load a folder of :data:`ONNX_FILES`.

        Args:
            threads: > 0 caps ONNX Runtime's intra-op threads (0: its default, one per core).
            model_file: ``encoder.onnx`` or the int8 graph :data:`INT8_FILE`.
            optimization: graph optimisation level, ``basic``, ``extended`` or ``all``.
            inter_op_threads: threads across independent graph nodes (sequential execution: 1).
        """
        folder = Path(folder)
        missing = [f for f in (*ONNX_FILES, model_file) if not (folder / f).exists()]
        if missing:
            raise OnnxError(f"{folder}: not an ONNX router folder (missing {sorted(set(missing))})")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            info = json.loads((folder / "router.json").read_text(encoding="utf-8"))
            config = RouterConfig.from_dict(info["router"])
            keys = np.load(folder / "llm_keys.npy", allow_pickle=False).astype(np.float32)
            if keys.shape[0] != len(config.llm_names):
                raise ValueError(f"{keys.shape[0]} LLM keys for {len(config.llm_names)} LLMs")
            bank = None
            if config.novelty:
                from routerdc.novelty import NOVELTY_FILE, load_bank

                bank = load_bank(folder, int(keys.shape[1]))
                if bank is None:
                    raise ValueError(f"the config has a novelty fallback but {NOVELTY_FILE} is missing")
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tok.enable_truncation(config.max_length, direction="left")  # special tokens are kept
            tok.enable_padding(pad_id=int(info.get("pad_token_id") or 0))  # to the longest in the batch
            levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                      "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
            opts = ort.SessionOptions()
            if threads > 0:
                opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = max(1, inter_op_threads)
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = levels[optimization]
            opts.log_severity_level = 3
            session = ort.InferenceSession(str(folder / model_file), opts, providers=["CPUExecutionProvider"])
        except ImportError as exc:
            raise OnnxError(f"ONNX routing needs onnxruntime and tokenizers ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign folder
            raise OnnxError(f"{folder}: cannot load the ONNX router ({type(exc).__name__}: {exc})") from None
        meta = RouterMeta.from_dict(info["config"], str(folder / "router.json")) if info.get("config") else None
        return cls(folder, session, tok, config, keys, info.get("unk_token_id"), meta, bank)

    @property
    def dim(self) -> int:
        return int(self.keys.shape[1])

    def prepare_texts(self, texts: Sequence[str]) -> list[str]:
        return normalize_texts(texts, self.config.normalization, self.tokenizer, known_chars=self._known)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``: special tokens, left truncation to ``max_length``,
        padding to the longest, as :func:`routerdc.model.encoder.tokenize` does with transformers."""
        encs = self.tokenizer.encode_batch(list(texts))
        shape = (len(encs), len(encs[0].ids) if encs else 0)
        return (np.array([e.ids for e in encs], dtype=np.int64).reshape(shape),
                np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(shape))

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The ONNX graph on one tokenised batch: embeddings ``(B, d)`` float32."""
        return self.session.run(["embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def embed_texts(self, texts: Sequence[str], *, batch_size: int | None = None,
                    token_budget: int | None = None) -> np.ndarray:
        """Query embeddings ``(n, d)`` (after the projection): tokenised once, sorted by length and
        packed into batches of at most ``token_budget`` padded tokens and ``batch_size`` rows."""
        from routerdc.model.batching import DEFAULT_TOKEN_BUDGET, MAX_BATCH_ROWS, token_budget_batches

        texts = self.prepare_texts(list(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids, mask = self.tokenize(texts)  # padded (on the right) to the longest of all
        lengths = mask.sum(1)
        for idx in token_budget_batches(lengths.tolist(), token_budget or DEFAULT_TOKEN_BUDGET,
                                        batch_size or MAX_BATCH_ROWS):
            width = int(lengths[idx].max())
            out[idx] = self.run(np.ascontiguousarray(ids[idx, :width]), np.ascontiguousarray(mask[idx, :width]))
        return out

    def route_embeddings(self, emb: np.ndarray, temperature: float | None = None) -> Routing:
        return route_embeddings(emb, self.keys, self.config, temperature, bank=self.bank)

    def route(self, texts: Sequence[str], *, temperature: float | None = None) -> Routing:
        return self.route_embeddings(self.embed_texts(texts), temperature)

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (e.g. to count [UNK])."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


def quantize_onnx_int8(folder: str | os.PathLike) -> Path:
    """Write :data:`INT8_FILE` beside ``encoder.onnx`` in an ONNX router folder (ONNX Runtime's
    dynamic quantization: int8 weights per channel, activations quantized on the fly) and return
    its path; an existing one is kept. The float graph stays the reference."""
    folder = Path(folder)
    out = folder / INT8_FILE
    if out.exists():
        return out
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxError(f"int8 ONNX needs onnxruntime.quantization and onnx ({exc})") from None
    tmp = folder / f".{INT8_FILE}.{os.getpid()}.tmp"
    try:
        import logging

        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(folder / "encoder.onnx"), str(tmp), weight_type=QuantType.QInt8,
                                 per_channel=True)
        finally:
            root.setLevel(level)
        commit_file(tmp, out)
    except Exception as exc:  # noqa: BLE001 - any quantizer failure means: no int8 graph
        tmp.unlink(missing_ok=True)
        raise OnnxError(f"cannot quantize {folder / 'encoder.onnx'} to int8: {type(exc).__name__}: {exc}") from exc
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m routerdc.inference.onnx CHECKPOINT OUTPUT``: export a saved router's ONNX form (checked
    against torch) into the folder OUTPUT. The app runs this in a low-priority process of its own, so
    that the export (torch tracing holds the GIL) never slows the requests it is serving."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m routerdc.inference.onnx", description=main.__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the export (default 1)")
    a = p.parse_args(argv)
    import torch

    from routerdc.model.router import RouterDC

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        print(export_onnx(RouterDC.from_pretrained(a.checkpoint), a.output))
    except OnnxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
