"""The RouterDC model: a text encoder E and one learned embedding k_t per candidate LLM.

    p(t | x) = softmax_t( (sim(E(x), k_t) + b_t) / tau ),   sim = cosine (default) or inner product

(b_t: the optional calibrated offsets ``config.llm_bias``, zero in training.)

The argmax LLM answers the query. ``save_pretrained`` writes safetensors and a JSON config that
carries the encoder, pooling, LLM names in order, tau, the training recipe and the metrics;
``from_pretrained`` reads them back and refuses anything else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from routerdc.checkpoint import (
    CheckpointError, RouterMeta, atomic_dir, load_state_dict, save_state_dict, write_json,
)
from routerdc.model.encoder import DEFAULT_ENCODER, load_encoder, load_tokenizer, normalize_texts, pool, tokenize
from routerdc.routing import SIMILARITIES, RouterConfig, Routing, route_embeddings

__all__ = ["SIMILARITIES", "RouterConfig", "RouterDC", "Routing"]


class RouterDC(nn.Module):
    """Query encoder + LLM embeddings. Build with :meth:`build`, load with :meth:`from_pretrained`."""

    def __init__(self, config: RouterConfig, encoder: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.novelty_bank: np.ndarray | None = None  # (m, d) training queries of the novelty fallback (routerdc.novelty)
        dim = int(encoder.config.hidden_size)
        self.llm_embeddings = nn.Embedding(len(config.llm_names), dim)
        nn.init.normal_(self.llm_embeddings.weight, mean=0.0, std=config.init_std)
        self.projection = nn.Linear(dim, dim) if config.projection else None
        if self.projection is not None:
            nn.init.eye_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)

    # ----------------------------------------------------------------- building and loading
    @classmethod
    def build(cls, llm_names: Sequence[str], *, encoder: str = DEFAULT_ENCODER, seed: int | None = 0,
              attention_dropout: bool = False, **config: Any) -> "RouterDC":
        """A fresh router over ``llm_names`` with pretrained encoder weights."""
        cfg = RouterConfig(llm_names=tuple(llm_names), encoder=str(encoder), **config)
        enc = load_encoder(cfg.encoder, attention_dropout=attention_dropout)
        tok = load_tokenizer(cfg.encoder)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return cls(cfg, enc, tok)

    @property
    def dim(self) -> int:
        return self.llm_embeddings.embedding_dim

    @property
    def device(self) -> torch.device:
        return self.llm_embeddings.weight.device

    # ----------------------------------------------------------------- forward
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled encoder output E(x), ``(B, d)`` (before the optional projection)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, self.config.pooling)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled if self.projection is None else self.projection(pooled)

    def similarities(self, query_emb: torch.Tensor) -> torch.Tensor:
        """sim(E(x), k_t) for every LLM, ``(B, T)``, before the temperature."""
        keys = self.llm_embeddings.weight.to(query_emb.dtype)
        if self.config.similarity == "cos":
            return F.normalize(query_emb, dim=-1) @ F.normalize(keys, dim=-1).T
        return query_emb @ keys.T

    def offset(self, sims: torch.Tensor) -> torch.Tensor:
        """``sims + b`` with the calibrated per-LLM offsets (``sims`` itself when there are none)."""
        if self.config.llm_bias is None:
            return sims
        return sims + torch.tensor(self.config.llm_bias, dtype=sims.dtype, device=sims.device)

    def logits(self, query_emb: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        return self.offset(self.similarities(query_emb)) / (temperature or self.config.temperature)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T), query embeddings (B, d))`` for a tokenised batch."""
        emb = self.project(self.encode(input_ids, attention_mask))
        return self.logits(emb), emb

    # ----------------------------------------------------------------- inference on texts
    def prepare_texts(self, texts: Sequence[str]) -> list[str]:
        """Apply the configured text normalisation."""
        return normalize_texts(texts, self.config.normalization, self.tokenizer)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Normalise and tokenise with dynamic padding and left truncation."""
        return tokenize(self.tokenizer, self.prepare_texts(texts), self.config.max_length)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], *, batch_size: int | None = None, project: bool = True,
                    sort_by_length: bool = True, token_budget: int | None = None) -> np.ndarray:
        """Query embeddings ``(n, d)`` as float32.

        The texts are tokenised once, sorted by token length and packed into batches of at most
        ``token_budget`` padded tokens (default :data:`routerdc.train.batching.DEFAULT_TOKEN_BUDGET`) and
        ``batch_size`` rows; ``sort_by_length=False`` keeps the given order (batches of
        ``batch_size``, default 64), as a reference for the batching.
        """
        from routerdc.model.batching import DEFAULT_TOKEN_BUDGET, MAX_BATCH_ROWS, token_budget_batches

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenize(texts)  # padded to the longest of all; each batch is cut to its own longest
        ids, mask = enc["input_ids"], enc["attention_mask"]
        lengths = mask.sum(1)
        if sort_by_length:
            batches = token_budget_batches(lengths.tolist(), token_budget or DEFAULT_TOKEN_BUDGET,
                                           batch_size or MAX_BATCH_ROWS)
        else:
            step = batch_size or 64
            batches = [list(range(i, min(i + step, len(texts)))) for i in range(0, len(texts), step)]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.training
        if was_training:  # eval() walks every module: not once per call on a router already in eval mode
            self.eval()
        try:
            for idx in batches:
                rows = torch.as_tensor(idx)
                width = int(lengths[rows].max())
                cols = slice(ids.shape[1] - width, None) if left else slice(0, width)
                emb = self.encode(ids[rows][:, cols].to(self.device), mask[rows][:, cols].to(self.device))
                if project:
                    emb = self.project(emb)
                out[idx] = emb.float().cpu().numpy()
        finally:
            if was_training:
                self.train(True)
        return out

    def llm_keys(self) -> np.ndarray:
        """The LLM embeddings ``(T, d)`` as float32 numpy (the keys of the routing rule)."""
        return self.llm_embeddings.weight.detach().float().cpu().numpy()

    def route_embeddings(self, emb: np.ndarray | torch.Tensor, temperature: float | None = None,
                         cost_weight: float = 0.0) -> Routing:
        """Routing decisions from query embeddings (as :meth:`embed_texts` returns), by the one
        routing rule :func:`routerdc.routing.route_embeddings` over this router's keys."""
        if isinstance(emb, torch.Tensor):
            emb = emb.detach().float().cpu().numpy()
        return route_embeddings(np.asarray(emb, dtype=np.float32), self.llm_keys(), self.config, temperature,
                                cost_weight, self.novelty_bank)

    def route(self, texts: Sequence[str], *, batch_size: int | None = None, temperature: float | None = None,
              cost_weight: float = 0.0) -> Routing:
        """Route each text; see :class:`Routing`."""
        return self.route_embeddings(self.embed_texts(texts, batch_size=batch_size), temperature, cost_weight)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | os.PathLike, *, include_encoder: bool = True,
                        recipe: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                        dtype: torch.dtype | None = None, max_shard_size: int | str = "5GB",
                        extra_json: Mapping[str, Any] | None = None,
                        extra_meta: Mapping[str, Any] | None = None) -> Path:
        """Write the router to ``folder`` atomically.

        Args:
            include_encoder: save the encoder weights (needed once they were trained); ``False``
                stores a reference to ``config.encoder`` instead (frozen-encoder routers).
            recipe, metrics: stored in config.json for the record.
            dtype: e.g. ``torch.float16`` to halve the file size.
            max_shard_size: split the weights into safetensors shards of at most this size.
            extra_json: more JSON files to write in the same atomic step, ``{name: object}``.
            extra_meta: more top-level entries of config.json (e.g. ``calibration``).

        A router with the novelty fallback also writes its bank (``novelty_bank``) to ``novelty.safetensors``.
        """
        folder = Path(folder)
        state = {k: v for k, v in self.state_dict().items() if include_encoder or not k.startswith("encoder.")}
        with atomic_dir(folder) as tmp:
            save_state_dict(state, tmp, dtype=dtype, max_shard_size=max_shard_size)
            self.encoder.config.save_pretrained(tmp / "encoder")
            self.tokenizer.save_pretrained(tmp / "encoder")
            extra = dict(extra_meta or {})
            meta = RouterMeta(router=self.config.to_dict(), encoder_weights="included" if include_encoder else "reference",
                              dtype=str(dtype or self.llm_embeddings.weight.dtype).replace("torch.", ""),
                              recipe=dict(recipe or {}), metrics=dict(metrics or {}),
                              calibration=extra.pop("calibration", None), extra=extra)
            write_json(tmp / "config.json", meta.to_dict())
            for name, obj in (extra_json or {}).items():
                write_json(tmp / name, obj)
            if self.config.novelty:
                from routerdc.io import write_bytes
                from routerdc.novelty import NOVELTY_FILE, bank_bytes

                if self.novelty_bank is None:
                    raise ValueError("the router has a novelty threshold but no novelty bank to save")
                write_bytes(tmp / NOVELTY_FILE, bank_bytes(self.novelty_bank))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> "RouterDC":
        """Load a router written by :meth:`save_pretrained`; safetensors only."""
        folder = Path(folder)
        meta = RouterMeta.read(folder)
        try:
            cfg = meta.router_config()
        except CheckpointError as exc:
            raise CheckpointError(f"{folder}: {exc}") from None
        state = load_state_dict(folder)
        included = meta.included
        try:
            if included:
                enc = load_encoder(folder / "encoder", weights=False)
                tok = load_tokenizer(folder / "encoder")
            else:
                enc = load_encoder(cfg.encoder, safetensors_only=True)
                tok = load_tokenizer(cfg.encoder)
        except Exception as exc:  # noqa: BLE001 - any loader failure is a checkpoint problem here
            raise CheckpointError(f"{folder}: cannot build the encoder ({exc})") from exc
        model = cls(cfg, enc, tok)
        expected = {k for k in model.state_dict() if included or not k.startswith("encoder.")}
        missing, unexpected = expected - set(state), set(state) - expected
        # Non-persistent buffers such as position_ids may be absent from a file; they are rebuilt.
        missing = {k for k in missing if not k.endswith("position_ids")}
        if missing or unexpected:
            raise CheckpointError(
                f"{folder}: weights do not match the config; missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"{folder}: weights do not fit the architecture ({exc})") from None
        model.meta = meta  # the folder's RouterMeta: recipe, metrics, calibration
        if cfg.novelty:
            from routerdc.novelty import NOVELTY_FILE, load_bank

            model.novelty_bank = load_bank(folder, model.dim)
            if model.novelty_bank is None:
                raise CheckpointError(f"{folder}: the config has a novelty fallback but {NOVELTY_FILE} is missing")
        return model.to(device).eval()
