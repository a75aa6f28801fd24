"""What a chat request asks of the router: which model, which cost weight, which session.

- ``model``: ``routerdc`` (route), ``routerdc:λ`` (route with cost weight λ, e.g. ``routerdc:0.5``)
  or a candidate's own name (no routing; the router's opinion is still reported).
- ``routerdc`` (a request field, ``extra_body`` for the openai client):
  ``{"cost_weight": λ, "session": ID, "reroute": bool}``. λ >= 0 and finite; it trades quality for
  cost by ``p(t|x) = softmax_t((sim + b_t - λ·c_t) / tau)`` (:func:`routerdc.routing.route_embeddings`),
  so it needs a router with ``llm_cost`` (``python -m routerdc costs``). λ = 0 (the default) is
  the rule without costs, bit for bit. ``session`` (else the OpenAI ``user`` field) keeps a
  conversation on one LLM (:mod:`.sessions`); ``reroute`` routes it again.

Everything here is pure: the API turns a :class:`ValueError` into a 400.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from routerdc.routing import RouterConfig, check_cost_weight
from routerdc.serving.limits import Name

__all__ = ["ROUTED_MODEL", "Ask", "RouterdcOptions", "is_routed_name", "next_best", "parse_ask",
           "parse_model_name"]

ROUTED_MODEL = "routerdc"
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

CostWeight = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False,
                                    description="cost weight λ >= 0 (0: routing without costs)")]
SessionId = Annotated[Name, Field(min_length=1, description="conversation id: later turns stay on its LLM")]


class RouterdcOptions(BaseModel):
    """The request field ``routerdc``: routing options beyond OpenAI's request."""

    model_config = ConfigDict(extra="forbid")
    cost_weight: CostWeight | None = None
    session: SessionId | None = None
    reroute: bool = False


@dataclass(frozen=True)
class Ask:
    """A chat request's routing, resolved.

    Attributes:
        routed: the router picks the LLM (``routerdc`` or ``routerdc:λ``), else ``model`` is a candidate.
        cost_weight: the λ applied to the router's decision (also to its opinion on a named candidate).
        session: ``(key, id, source)`` with source ``"session"`` or ``"user"``; None without one or
            for a named candidate.
        reroute: route a live session again.
    """

    routed: bool
    cost_weight: float = 0.0
    session: tuple[str, str, str] | None = None
    reroute: bool = False


def is_routed_name(model: str) -> bool:
    return model == ROUTED_MODEL or model.startswith(ROUTED_MODEL + ":")


def parse_model_name(model: str) -> float | None:
    """The λ of ``routerdc:λ`` (None for plain ``routerdc``); ValueError when λ is not a number >= 0."""
    if model == ROUTED_MODEL:
        return None
    text = model[len(ROUTED_MODEL) + 1:]
    if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
        raise ValueError(f"model {model!r}: after '{ROUTED_MODEL}:' comes the cost weight, a finite number >= 0 "
                         f"(e.g. '{ROUTED_MODEL}:0.5'), not {text!r}")
    return float(text)


def parse_ask(model: str, options: RouterdcOptions | None, user: str | None, config: RouterConfig,
              candidates: Sequence[str]) -> Ask:
    """Resolve ``model``, the ``routerdc`` field and ``user`` against the router's ``config``.

    A candidate's own name wins over the ``routerdc:λ`` form. Raises :class:`LookupError` for an
    unknown model and :class:`ValueError` for a bad or conflicting cost weight, or one the router
    cannot apply (no ``llm_cost``).
    """
    opts = options or RouterdcOptions()
    routed = model not in candidates
    if routed and not is_routed_name(model):
        raise LookupError(f"unknown model {model!r}; use {ROUTED_MODEL!r}, '{ROUTED_MODEL}:<cost weight>' or one of "
                          f"{list(candidates)}")
    from_name = parse_model_name(model) if routed else None
    if from_name is not None and opts.cost_weight is not None and from_name != opts.cost_weight:
        raise ValueError(f"model {model!r} asks for cost weight {from_name:g} but routerdc.cost_weight is "
                         f"{opts.cost_weight:g}; give one of them")
    lam = from_name if from_name is not None else (opts.cost_weight or 0.0)
    try:
        lam = check_cost_weight(config, lam)
    except ValueError as exc:
        raise ValueError(f"cost weight {lam:g}: {exc}") from None
    session = None
    if routed and (opts.session or user):
        source, sid = ("session", opts.session) if opts.session else ("user", user)
        session = (f"{source}:{sid}", str(sid), source)
    return Ask(routed=routed, cost_weight=float(lam), session=session, reroute=bool(opts.reroute))


def next_best(probs: Mapping[str, float], exclude: str, candidates: Sequence[str]) -> str | None:
    """The most probable LLM other than ``exclude`` among ``candidates`` (None when there is none)."""
    left = [(p, n) for n, p in probs.items() if n != exclude and n in candidates]
    return max(left)[1] if left else None


def model_entry(config: RouterConfig) -> dict[str, Any]:
    """What ``/v1/models`` says of the routed model beyond OpenAI's fields."""
    costs = None if config.llm_cost is None else dict(zip(config.llm_names, config.llm_cost))
    return {"routerdc": {"cost_weight": costs is not None, "llm_cost": costs,
                         "model_name_form": f"{ROUTED_MODEL}:<cost weight>"}}
