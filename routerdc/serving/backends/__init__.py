"""Candidate backends behind one interface (:class:`~.base.Backend`).

Implementations are imported lazily by :func:`make_backend`, so importing this package loads
neither torch, transformers nor the openai client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routerdc.serving.backends.base import (Backend, BackendError, BackendUnavailable, Message, Outcome, PromptTooLong, SamplingParams,
                   check_fits, render_prompt)

if TYPE_CHECKING:
    from routerdc.serving.config import ModelSpec, ModelsConfig

__all__ = ["Backend", "BackendError", "BackendUnavailable", "Message", "Outcome", "PromptTooLong", "SamplingParams",
           "check_fits", "make_backend", "render_prompt"]


def make_backend(spec: "ModelSpec", config: "ModelsConfig") -> Backend:
    """The backend of one candidate, by its ``backend`` kind."""
    if spec.backend == "transformers":
        from routerdc.serving.backends.transformers_backend import TransformersBackend

        return TransformersBackend(spec)
    if spec.backend in ("openai", "vllm"):
        from routerdc.serving.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(spec, config.limits)
    if spec.backend == "recorded":
        from routerdc.serving.backends.recorded import RecordedBackend

        return RecordedBackend(spec, [config.resolve_data_file(f) for f in spec.data_files])
    raise ValueError(f"unknown backend kind {spec.backend!r}")
