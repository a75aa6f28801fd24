"""The models config: which candidate LLM answers behind each of the router's LLM names.

A models config is a YAML or JSON file::

    data_dir: null                 # base of relative `data_files` (default: $ROUTERDC_DATA)
    limits: {max_tokens: 1024}     # server-wide bound on a request's max_tokens
    models:
      - name: mistralai/Mistral-7B-v0.1        # must match one of the router's LLM names
        backend: transformers                  # transformers | openai | vllm | recorded
        model: mistralai/Mistral-7B-v0.1       # hub id or local folder (transformers, vllm)
        tokenizer: null                        # tokenizer to count tokens (default: `model`, except
                                               # for openai: none, then ~3 characters per token)
        prompt_format: completion              # chat (the tokenizer's chat template) | completion
        max_context: 8192                      # prompt + answer tokens
        sampling: {temperature: 0.7, top_p: 0.95, max_tokens: 256}
        cost_per_1k_input: 0.0                 # dollars per 1k prompt tokens (default null: no
        cost_per_1k_output: 0.0                # dollars per 1k answer tokens   price declared)

Backend-specific fields: ``openai`` needs ``base_url`` and ``model`` (the server's model name)
and may name ``api_key_env`` (an environment variable holding the key); ``vllm`` takes ``port``
and ``gpu_memory_utilization`` (it is served over the OpenAI protocol at
``http://127.0.0.1:<port>/v1``); ``recorded`` reads ``data_files`` (RouterBench CSVs).

A top-level ``gpu`` section (:class:`GpuPlan`: ``memory_budget``, ``sleep_mode``,
``swap_timeout_s``) says how ``vllm`` candidates share one GPU; when their shares do not fit,
vLLM's sleep mode swaps them.

Prices are optional: a candidate that declares neither ``cost_per_1k_*`` has no price
(:attr:`ModelSpec.priced` is false; ``costs --models-config`` counts it as free, while
``collect`` / ``import-lm-eval --models-config`` fill no costs unless every LLM is priced); one
declared alone makes the other 0.

Unknown fields are errors, so a typo never passes silently. :meth:`ModelsConfig.check_router`
checks the names against a router's LLMs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BackendKind = Literal["transformers", "openai", "vllm", "recorded"]


class ConfigError(ValueError):
    """A models config that cannot be used (bad file, bad field, names not matching the router)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingDefaults(_Strict):
    """Default sampling parameters of a candidate; a request's own values override them."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)


class Limits(_Strict):
    """Server-wide bounds on user-controlled parameters."""

    max_tokens: int = Field(1024, ge=1, description="upper bound of a request's max_tokens")
    request_timeout_s: float = Field(60.0, gt=0, description="HTTP timeout of openai/vllm backends")
    max_retries: int = Field(2, ge=0, le=10, description="retries (with backoff) before the first token")


class ModelSpec(_Strict):
    """One candidate LLM."""

    name: str = Field(min_length=1)
    backend: BackendKind
    model: str | None = None
    tokenizer: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    data_files: tuple[str, ...] = ()
    prompt_format: Literal["chat", "completion"] = "chat"
    max_context: int = Field(4096, ge=8)
    sampling: SamplingDefaults = SamplingDefaults()
    cost_per_1k_input: float | None = Field(None, ge=0.0)
    cost_per_1k_output: float | None = Field(None, ge=0.0)
    device: str = "cpu"

    @model_validator(mode="after")
    def _backend_fields(self) -> "ModelSpec":
        need = {"transformers": ("model",), "openai": ("base_url", "model"), "vllm": ("model", "port"),
                "recorded": ("data_files",)}[self.backend]
        missing = [f for f in need if not getattr(self, f)]
        if missing:
            raise ValueError(f"model {self.name!r}: backend {self.backend!r} needs {', '.join(missing)}")
        return self

    @property
    def priced(self) -> bool:
        """Whether the config declares this candidate's prices (either ``cost_per_1k_*``)."""
        return self.cost_per_1k_input is not None or self.cost_per_1k_output is not None

    @property
    def tokenizer_source(self) -> str | None:
        """Where the tokenizer that counts this candidate's tokens comes from."""
        if self.tokenizer:
            return self.tokenizer
        return self.model if self.backend in ("transformers", "vllm") else None

    @property
    def endpoint(self) -> str | None:
        """The OpenAI-compatible base URL of an ``openai`` or ``vllm`` candidate."""
        if self.backend == "openai":
            return self.base_url
        if self.backend == "vllm":
            return self.base_url or f"http://127.0.0.1:{self.port}/v1"
        return None


class GpuPlan(_Strict):
    """How the ``vllm`` candidates share one GPU.

    Each ``vllm`` candidate asks for ``gpu_memory_utilization`` (a fraction of the GPU). When the
    shares add up to more than ``memory_budget``, the candidates cannot all be awake at once and
    vLLM's sleep mode swaps them (``sleep_mode: auto``): the launcher starts each server with
    ``--enable-sleep-mode`` and puts it to sleep once loaded (level 1: weights offloaded to CPU
    memory, KV cache freed); the router service wakes the chosen candidate before forwarding a
    request, first putting idle awake candidates to sleep until the awake shares fit the budget.
    """

    memory_budget: float = Field(0.9, gt=0.0, le=1.0, description="GPU fraction all awake vllm servers may use")
    sleep_mode: Literal["auto", "always", "never"] = "auto"
    swap_timeout_s: float = Field(300.0, gt=0, description="how long a request waits for a busy GPU")


class ModelsConfig(_Strict):
    """All candidates behind a router."""

    models: tuple[ModelSpec, ...] = Field(min_length=1)
    data_dir: str | None = None
    limits: Limits = Limits()
    gpu: GpuPlan = GpuPlan()

    @model_validator(mode="after")
    def _check(self) -> "ModelsConfig":
        """Unique names, and GPU shares that fit the plan."""
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names appear more than once: {dup}")
        budget = self.gpu.memory_budget
        big = [m.name for m in self.vllm_models if self.gpu_share(m) > budget + 1e-9]
        if big:
            raise ValueError(f"vllm candidates {big} ask for more than gpu.memory_budget={budget:g} on their own")
        if self.gpu.sleep_mode == "never" and self._declares_shares and self.vllm_share_total > budget + 1e-9:
            raise ValueError(f"the vllm candidates' gpu_memory_utilization add up to {self.vllm_share_total:g} > "
                             f"gpu.memory_budget={budget:g}, and gpu.sleep_mode is 'never': lower the shares "
                             "or allow sleep mode to swap them")
        return self

    @property
    def vllm_models(self) -> tuple[ModelSpec, ...]:
        return tuple(m for m in self.models if m.backend == "vllm")

    def gpu_share(self, spec: ModelSpec) -> float:
        """A vllm candidate's GPU fraction (vLLM's default 0.9 when unset)."""
        return spec.gpu_memory_utilization or 0.9

    @property
    def vllm_share_total(self) -> float:
        return sum(self.gpu_share(m) for m in self.vllm_models)

    @property
    def _declares_shares(self) -> bool:
        return any(m.gpu_memory_utilization for m in self.vllm_models)

    @property
    def uses_sleep_mode(self) -> bool:
        """Whether the vllm candidates are swapped with vLLM's sleep mode (see :class:`GpuPlan`).

        ``auto`` applies when the config plans the GPU, i.e. some vllm candidate declares its
        ``gpu_memory_utilization`` (a candidate without one counts as vLLM's default 0.9); a
        config without shares (e.g. vLLM on CPU) is never swapped unless ``sleep_mode: always``.
        """
        if not self.vllm_models or self.gpu.sleep_mode == "never":
            return False
        if self.gpu.sleep_mode == "always":
            return True
        return self._declares_shares and self.vllm_share_total > self.gpu.memory_budget + 1e-9

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def get(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def check_router(self, llm_names: Sequence[str]) -> None:
        """Raise :class:`ConfigError` unless the config names exactly the router's LLMs."""
        unknown = [n for n in self.names if n not in llm_names]
        absent = [n for n in llm_names if n not in self.names]
        problems = []
        if unknown:
            problems.append(f"names LLMs the router does not know: {unknown}")
        if absent:
            problems.append(f"misses LLMs the router can choose: {absent}")
        if problems:
            raise ConfigError("models config " + "; ".join(problems) + f" (router LLMs: {list(llm_names)})")

    def resolve_data_file(self, file: str) -> Path:
        """A ``data_files`` entry: absolute, or relative to ``data_dir`` / ``$ROUTERDC_DATA``."""
        p = Path(os.path.expandvars(file)).expanduser()
        if p.is_absolute():
            return p
        base = self.data_dir or os.environ.get("ROUTERDC_DATA") or "../shared/data"
        return Path(base).expanduser() / p


def parse_models_config(data: object, where: str = "models config") -> ModelsConfig:
    """Validate a decoded config (a dict); errors name the field."""
    try:
        return ModelsConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc or '(top)'}: {err['msg']}")
        raise ConfigError(f"{where} is invalid:\n" + "\n".join(lines)) from None


def load_models_config(path: str | os.PathLike) -> ModelsConfig:
    """Read a ``.yaml``/``.yml`` or ``.json`` models config."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read models config {p}: {exc}") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    cfg = parse_models_config(data, where=str(p))
    if cfg.data_dir and not Path(cfg.data_dir).is_absolute():
        cfg = cfg.model_copy(update={"data_dir": str((p.parent / cfg.data_dir).resolve())})
    return cfg
