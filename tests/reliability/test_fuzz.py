"""Property-based fuzzing: the data readers, the chat request model, and the API's own OpenAPI
schema (schemathesis). Bounded example counts keep it fast; no 5xx and no unhandled exception."""

from __future__ import annotations

import csv
import io
import json
import warnings

import pytest
import schemathesis  # noqa: F401 - schemathesis.openapi below
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routerdc.data import DataError, load_scores, read_queries
from routerdc.limits import BOUNDS

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

text = st.text(st.characters(codec="utf-8"), max_size=30)
names = st.sampled_from(["query", "question", "scores", "task", "metric", "cluster", "cluster_id", "costs",
                         "a", "b", "data", ""])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True), text)
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.one_of(names, text), kids, max_size=4)),
                      max_leaves=20)
row = st.fixed_dictionaries({"query": st.one_of(text, values), "scores": st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.one_of(st.floats(0, 1), scalars), max_size=3), values)},
    optional={"task": st.one_of(text, values), "metric": st.one_of(st.sampled_from(["probability", "x"]), values),
              "cluster": values, "costs": values})


def _read(path):
    """A reader either returns score sets or raises DataError; nothing else may escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_scores(path)
        except DataError:
            pass
        try:
            read_queries(path)
        except DataError:
            pass


@FAST
@given(st.one_of(values, st.lists(row, max_size=5), st.lists(values, max_size=5)))
def test_json_reader_never_fails_unexpectedly(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("j") / "f.json"
    p.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    _read(p)


@FAST
@given(st.lists(st.one_of(row.map(json.dumps), values.map(json.dumps), text), max_size=5))
def test_jsonl_reader_never_fails_unexpectedly(tmp_path_factory, lines):
    p = tmp_path_factory.mktemp("l") / "f.jsonl"
    p.write_text("\n".join(lines), encoding="utf-8")
    _read(p)


cells = st.one_of(text, st.sampled_from(["", "0.5", "1", "nan", "inf", "['a', 'b']", "['a', 1]", "[", "[x]",
                                          "[" * 200 + "]" * 200, "['" + "z" * 10 + "']"]))


@FAST
@given(st.lists(st.sampled_from(["prompt", "eval_name", "a", "b", "a|total_cost", "b|model_response",
                                 "cluster_id", "", "prompt"]), min_size=1, max_size=6),
       st.lists(st.lists(cells, max_size=7), max_size=5))
def test_csv_reader_never_fails_unexpectedly(tmp_path_factory, header, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    p = tmp_path_factory.mktemp("c") / "f.csv"
    p.write_text(buf.getvalue(), encoding="utf-8")
    _read(p)


@FAST
@given(st.binary(max_size=200), st.sampled_from([".json", ".jsonl", ".csv", ".txt"]))
def test_any_bytes_in_any_encoding_are_refused_cleanly(tmp_path_factory, raw, suffix):
    p = tmp_path_factory.mktemp("b") / f"f{suffix}"
    p.write_bytes(raw)
    _read(p)


# ----------------------------------------------------------------------------- the chat request model
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]),
                                           "content": st.one_of(st.text(max_size=20), values)},
                                          optional={"name": text}), max_size=4)
requests_ = st.fixed_dictionaries(
    {"model": st.one_of(st.just("routerdc"), text), "messages": st.one_of(messages, values)},
    optional={"seed": st.one_of(st.integers(), values), "stop": st.one_of(st.text(max_size=80),
                                                                           st.lists(st.text(max_size=80), max_size=6),
                                                                           values),
              "max_tokens": st.one_of(st.integers(), values), "temperature": st.one_of(st.floats(), values),
              "top_p": st.one_of(st.floats(), values), "stream": values, "n": values, "user": values,
              "logprobs": values})


@settings(max_examples=150, deadline=None)
@given(requests_)
def test_chat_request_model_accepts_only_bounded_valid_text(obj):
    from routerdc.serving.api import ChatRequest

    try:
        req = ChatRequest.model_validate(obj)
    except ValidationError:
        return
    json.dumps(req.model_dump(), ensure_ascii=False).encode("utf-8")  # every string is valid UTF-8
    assert len(req.messages) <= BOUNDS.max_messages
    assert all(len(m.content) <= BOUNDS.max_message_chars for m in req.messages)
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    assert len(stops) <= BOUNDS.max_stop and all(0 < len(s) <= BOUNDS.max_stop_chars for s in stops)
    assert req.seed is None or BOUNDS.seed_min <= req.seed <= BOUNDS.seed_max


# ----------------------------------------------------------------------------- schemathesis
@pytest.fixture(scope="module")
def api_schema(tiny, tiny_router):
    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.config import parse_models_config
    from routerdc.serving.registry import Registry

    from .conftest import transformers_models

    cfg = parse_models_config({"models": transformers_models(tiny, max_tokens=2), "limits": {"max_tokens": 3}})
    return schemathesis.openapi.from_asgi("/openapi.json", create_api(RouterDC.from_pretrained(tiny_router),
                                                                      Registry(cfg)))


def test_api_never_answers_5xx_to_its_own_schema(api_schema):
    """Every operation of /openapi.json, with generated valid and invalid requests. The in-process
    client re-raises any unhandled server exception, so that fails the test too."""
    from schemathesis.checks import not_a_server_error

    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in ops)
    for op in ops:
        @settings(max_examples=40 if op.path == "/v1/chat/completions" else 8, deadline=None,
                  suppress_health_check=list(HealthCheck), database=None)
        @given(op.as_strategy())
        def run(case):
            case.call_and_validate(checks=[not_a_server_error])

        run()
