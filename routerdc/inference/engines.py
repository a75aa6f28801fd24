"""The engines that compute query embeddings E(x) for :class:`routerdc.inference.Router`.

============  ==================================================================================
``torch``       the safetensors router in float32 (the reference every other engine is checked
                against)
``torch-bf16``  the same under ``torch.autocast(bfloat16)``: CPUs with AMX-BF16 or AVX512-BF16,
                or CUDA (fp32 weights, bf16 matmuls)
``int8``        :func:`routerdc.inference.int8.quantize_int8`: torch dynamic int8 linear layers
``onnx``        the router's ONNX form on ONNX Runtime (:mod:`routerdc.inference.onnx`), no
                torch needed once exported
``onnx-int8``   the same graph after ONNX Runtime's dynamic int8 quantization
``torch-bf16-checked``  torch-bf16, with the near-ties re-encoded in torch fp32
                (:mod:`routerdc.inference.checked`): routes like fp32 at nearly bf16's speed
============  ==================================================================================

All engines batch by token budget (:func:`routerdc.train.batching.token_budget_batches`) and hand
their embeddings to the one routing rule, :func:`routerdc.routing.route_embeddings`.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from routerdc.routing import RouterConfig
from routerdc.inference.features import cpu_features

__all__ = ["ENGINES", "Engine", "EngineUnavailable", "OnnxEngine", "Sources", "TorchEngine", "build_engine",
           "supported"]

ENGINES: tuple[str, ...] = ("torch", "torch-bf16", "torch-bf16-checked", "int8", "onnx", "onnx-int8")


class EngineUnavailable(RuntimeError):
    """The engine cannot run on this machine or for this router."""


class Engine(Protocol):
    name: str
    config: RouterConfig
    keys: np.ndarray
    meta: dict | None
    bank: np.ndarray | None  # the novelty fallback's training queries (routerdc.novelty), or None

    def embed(self, texts: Sequence[str], *, token_budget: int | None = None,
              max_rows: int | None = None) -> np.ndarray: ...

    def token_ids(self, text: str) -> list[int]: ...

    @property
    def unk_token_id(self) -> int | None: ...


def supported(name: str, device: str) -> str | None:
    """``None`` when ``name`` can run on ``device`` here, else why not."""
    if name not in ENGINES:
        raise ValueError(f"engine must be auto or one of {ENGINES}, got {name!r}")
    from routerdc.inference.checked import CHECKED

    name = CHECKED.get(name, name)  # a checked engine runs where its fast engine runs
    cuda = device.startswith("cuda")
    if name == "torch-bf16" and not cuda and not cpu_features().bf16:
        return "the CPU has neither AMX-BF16 nor AVX512-BF16"
    if name in ("int8", "onnx", "onnx-int8") and cuda:
        return f"{name} runs on the CPU only"
    return None


@dataclass
class TorchEngine:
    """A :class:`routerdc.model.router.RouterDC` (fp32, bf16 autocast or int8-quantized)."""

    model: Any
    name: str = "torch"
    bf16: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the HF tokenizer is not thread-safe

    def __post_init__(self) -> None:
        self.config = self.model.config
        self.keys = self.model.llm_keys()
        meta = getattr(self.model, "meta", None)  # None: a router built in memory (its encoder is pretrained)
        self.meta = meta
        self.bank = getattr(self.model, "novelty_bank", None)

    def embed(self, texts: Sequence[str], *, token_budget: int | None = None, max_rows: int | None = None,
              project: bool = True) -> np.ndarray:
        import torch

        ctx = (torch.autocast(self.model.device.type, dtype=torch.bfloat16) if self.bf16
               else contextlib.nullcontext())
        with self._lock, ctx:
            return self.model.embed_texts(list(texts), project=project, token_budget=token_budget,
                                          batch_size=max_rows)

    @property
    def unk_token_id(self) -> int | None:
        return getattr(self.model.tokenizer, "unk_token_id", None)

    def token_ids(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class OnnxEngine:
    """An :class:`routerdc.inference.onnx.OnnxRouter` (fp32 or int8 graph)."""

    onnx: Any
    name: str = "onnx"

    def __post_init__(self) -> None:
        self.config = self.onnx.config
        self.keys = self.onnx.keys
        self.meta = self.onnx.meta
        self.bank = self.onnx.bank

    def embed(self, texts: Sequence[str], *, token_budget: int | None = None,
              max_rows: int | None = None) -> np.ndarray:
        return self.onnx.embed_texts(list(texts), token_budget=token_budget, batch_size=max_rows)

    @property
    def unk_token_id(self) -> int | None:
        return self.onnx.unk_token_id

    def token_ids(self, text: str) -> list[int]:
        return self.onnx.token_ids(text)


class Sources:
    """Where engines come from for one router folder: the torch router (loaded once, on first
    need) and the ONNX form cached under ``onnx_dir`` (exported from torch when missing)."""

    def __init__(self, folder: Path, *, device: str, threads: int, onnx_dir: Path,
                 model: Any = None, loader: Callable[[Path, str], Any] | None = None,
                 data_dir: str | Path | None = None) -> None:
        self.folder, self.device, self.threads, self.onnx_dir = folder, device, threads, onnx_dir
        self.data_dir = data_dir  # where a checked engine finds its probe queries
        self._model, self._loader = model, loader
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                import torch

                from routerdc.model.router import RouterDC

                if self.threads > 0 and not self.device.startswith("cuda"):
                    torch.set_num_threads(self.threads)
                load = self._loader or (lambda f, d: RouterDC.from_pretrained(f, device=d))
                self._model = load(self.folder, self.device)
            return self._model

    def onnx_folder(self) -> Path:
        from routerdc.inference.onnx import ONNX_FILES, export_onnx

        if not all((self.onnx_dir / f).exists() for f in ONNX_FILES):
            export_onnx(self.model, self.onnx_dir)
        return self.onnx_dir


def build_engine(name: str, sources: Sources, *, bounds: Any = None, novelty_bound: float | None = None) -> Engine:
    """The engine ``name`` for the router of ``sources``; :class:`EngineUnavailable` when it cannot run.

    A checked engine re-encodes in fp32 the queries within ``bounds`` (``(T, T)``, score units) of
    a tie, and those within ``novelty_bound`` of the novelty threshold; None: measured now on the
    probe queries (:func:`routerdc.inference.checked.calibrate`).
    """
    why = supported(name, sources.device)
    if why:
        raise EngineUnavailable(f"{name}: {why}")
    try:
        from routerdc.inference.checked import CHECKED, MIN_BOUND, CheckedEngine, calibrate

        if name in CHECKED:
            fast = build_engine(CHECKED[name], sources)
            exact = TorchEngine(sources.model, "torch", _lock=fast._lock)  # one tokenizer, one lock
            if bounds is None:
                from routerdc.inference.select import probe_texts

                bounds, novelty_bound = calibrate(fast, exact, probe_texts(sources.data_dir)[0])
            return CheckedEngine(fast, exact, bounds, name, novelty_bound=novelty_bound or MIN_BOUND)
        if name == "torch":
            return TorchEngine(sources.model, "torch")
        if name == "torch-bf16":
            return TorchEngine(sources.model, "torch-bf16", bf16=True)
        if name == "int8":
            from routerdc.inference.int8 import quantize_int8

            return TorchEngine(quantize_int8(sources.model), "int8")
        from routerdc.inference.onnx import INT8_FILE, OnnxRouter, quantize_onnx_int8

        folder = sources.onnx_folder()
        if name == "onnx":
            return OnnxEngine(OnnxRouter.load(folder, threads=sources.threads), "onnx")
        quantize_onnx_int8(folder)
        return OnnxEngine(OnnxRouter.load(folder, threads=sources.threads, model_file=INT8_FILE), "onnx-int8")
    except EngineUnavailable:
        raise
    except (ImportError, RuntimeError, OSError, ValueError) as exc:
        raise EngineUnavailable(f"{name}: {type(exc).__name__}: {exc}") from exc
