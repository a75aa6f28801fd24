"""Int8 CPU inference: dynamic quantization of the encoder's linear layers.

:func:`quantize_int8` returns a copy of a router whose encoder ``nn.Linear`` layers hold int8
weights (one scale per output channel) and quantize their input activations on the fly to
8 bits (one scale per batch tensor). Everything else stays float32: embeddings, LayerNorms,
the attention matmuls and softmax, the optional projection and the LLM embeddings, so ``route``,
``route_embeddings`` and ``embed_texts`` work unchanged. For CPU inference only: the int8 layers
have no gradients and ``save_pretrained`` refuses (save the float32 router, quantize after
loading). Since the activation scale covers a whole padded batch, a query's int8 embedding
depends slightly on the queries batched with it (cosine ~0.98 between alone and batched).

Backend: ``torch.ao.quantization.quantize_dynamic`` (fbgemm/oneDNN "x86" kernels), the only
in-process int8 path with fast eager CPU kernels that needs no extra dependency. torch marks
``torch.ao.quantization`` as deprecated in favour of ``torchao``, whose eager int8 path
(``Int8DynamicActivationInt8WeightConfig``) was measured 20x *slower* than float32 on an AVX2
CPU (a reference int8 matmul without ``torch.compile``). The deprecation warnings are silenced
here; should a torch release drop the API, :func:`quantize_int8` raises
:class:`QuantizationUnavailable` and float32 keeps working.

Accuracy (all-MiniLM-L6-v2, CLS pooling, real test queries of the 8 paper test sets): torch's
``DynamicQuantizedLinear`` quantizes activations to 7 bits (``reduce_range=True``, a guard
against int16 overflow in AVX2 kernels); here they use the full 8 bits, which halves the error
of each layer: cosine(fp32, int8) per query embedding >= 0.989 (mean 0.994), against >= 0.958
(mean 0.983) with 7 bits and >= 0.938 (mean 0.967) with one weight scale per tensor, at the
same speed. The routing agreement with the fp32 router depends on its margins: see
``bench/route_speed.py``.

Threads: the int8 kernels use torch's intra-op pool, so ``torch.set_num_threads`` applies to
them as to float32. Use at most one thread per *idle* core: on a 2-core machine with another
busy process, 2 threads made single-query latency 15x worse than 1 thread (each of the ~100
parallel regions of a forward waits for the descheduled thread).
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn

if TYPE_CHECKING:
    from routerdc.model.router import RouterDC

__all__ = ["Int8DynamicLinear", "QuantizationUnavailable", "is_quantized", "quantize_int8"]

QUANTIZED_ATTR = "quantization"
SCHEME = "int8 dynamic (torch.ao): weights per output channel, 8-bit activations per tensor"


class QuantizationUnavailable(RuntimeError):
    """This torch build offers no dynamic int8 quantization for CPU."""


with warnings.catch_warnings():
    # torch.ao.quantization warns on import and use that it is deprecated (see the module doc).
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from torch.ao.nn.quantized.dynamic import Linear as _DynamicLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig as _QCONFIG
        from torch.ao.quantization import quantize_dynamic as _quantize_dynamic
    except ImportError:  # pragma: no cover - depends on the torch release
        _DynamicLinear = None


if _DynamicLinear is not None:

    class Int8DynamicLinear(_DynamicLinear):  # type: ignore[misc, valid-type]
        """torch's ``DynamicQuantizedLinear`` with 8-bit instead of 7-bit activations (module doc)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self._packed_params.dtype != torch.qint8:  # pragma: no cover - only qint8 is built here
                return super().forward(x)
            out = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
            return out.to(x.dtype)

        def _get_name(self) -> str:
            return "Int8DynamicLinear"

else:  # pragma: no cover
    Int8DynamicLinear = None  # type: ignore[assignment, misc]


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds dynamically quantized int8 linear layers."""
    return _DynamicLinear is not None and any(isinstance(m, _DynamicLinear) for m in model.modules())


def _refuse_save(*_: Any, **__: Any) -> NoReturn:
    raise RuntimeError(
        "an int8-quantized router cannot be saved: save the float32 router and call "
        "routerdc.inference.int8.quantize_int8 after loading it"
    )


def quantize_int8(model: "RouterDC") -> "RouterDC":
    """A copy of ``model`` for CPU inference with int8 dynamic quantization of the encoder.

    The original is left untouched. The copy is on the CPU, in eval mode, with every
    ``nn.Linear`` inside ``model.encoder`` replaced by a dynamically quantized int8 layer.

    Raises:
        ValueError: ``model`` is already quantized.
        QuantizationUnavailable: this torch build has no CPU int8 engine or no
            ``torch.ao.quantization``.
    """
    if is_quantized(model):
        raise ValueError("the router is already int8-quantized")
    if _DynamicLinear is None:  # pragma: no cover - depends on the torch release
        raise QuantizationUnavailable(f"torch {torch.__version__} has no torch.ao dynamic quantization")
    if not [e for e in torch.backends.quantized.supported_engines if e != "none"]:
        raise QuantizationUnavailable("this torch build has no quantized CPU engine")
    qmodel = copy.deepcopy(model).cpu().eval()
    qmodel.encoder.float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated", category=UserWarning)
        qmodel.encoder = _quantize_dynamic(
            qmodel.encoder, {nn.Linear: _QCONFIG}, dtype=torch.qint8, mapping={nn.Linear: Int8DynamicLinear},
            inplace=True,
        )
    if not is_quantized(qmodel):
        raise QuantizationUnavailable("quantize_dynamic left the encoder unchanged")
    object.__setattr__(qmodel, QUANTIZED_ATTR, SCHEME)
    object.__setattr__(qmodel, "save_pretrained", _refuse_save)
    return qmodel
