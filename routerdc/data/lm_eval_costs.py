"""Dollar costs of harness-logged documents: an LLM's prices times its own tokenizer's token counts.

What lm-eval 0.4.13 logs per document (``--log_samples``): ``arguments``, one entry per request
(``gen_args_<i>``: for a log-likelihood request the context ``arg_0`` and the continuation
``arg_1``; for a generation request the prompt ``arg_0`` and the generation settings ``arg_1``),
and ``resps``, what came back (log-likelihoods, or the generated texts: ``repeats`` of them).

The cost of one document for one LLM (:func:`row_cost`):

- log-likelihood requests (multiple choice): each request's context + continuation tokens at the
  input price, summed over the choices; nothing is generated, so no output price;
- generation: the prompt's tokens at the input price plus the answer's tokens at the output price.
  With ``repeats: N`` this is the mean over the N answers: the score of such a document is the
  fraction of its N answers that are right (the expected score of one answer), so its cost is
  the expected cost of one answer too.

Token counts come from an injected ``count`` function (the candidate's own tokenizer, without
special tokens); the texts are the logged ones (a generated answer as the harness cut it at its
stop sequence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from routerdc.data.scoreset import DataError


@dataclass(frozen=True)
class Pricing:
    """One LLM's prices in dollars per 1k tokens, and the token count of its tokenizer."""

    input_per_1k: float
    output_per_1k: float
    count: Callable[[str], int]


def row_tokens(row: Mapping[str, Any], config: Mapping[str, Any], count: Callable[[str], int],
               where: str) -> tuple[float, float]:
    """(input tokens, output tokens) of one logged document, as :func:`row_cost` prices them."""
    try:
        args = [row["arguments"][k] for k in sorted(row["arguments"], key=lambda k: int(k.rsplit("_", 1)[-1]))]
        if config.get("output_type") != "generate_until":  # log-likelihood requests: context + continuation
            return float(sum(count(str(a["arg_0"]) + str(a["arg_1"])) for a in args)), 0.0
        prompt, answers = count(str(args[0]["arg_0"])), row["resps"][0] if row["resps"] else None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(f"{where}: cannot count tokens of 'arguments' ({type(exc).__name__}: {exc})") from None
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{where}: no answers in 'resps' to count")
    return float(prompt), sum(count(str(a)) for a in answers) / len(answers)


def row_cost(row: Mapping[str, Any], config: Mapping[str, Any], pricing: Pricing, where: str) -> float:
    """Dollars one LLM spent on one logged document (see the module docstring)."""
    tokens_in, tokens_out = row_tokens(row, config, pricing.count, where)
    return (tokens_in * pricing.input_per_1k + tokens_out * pricing.output_per_1k) / 1000.0
