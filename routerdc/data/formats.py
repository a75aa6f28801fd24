"""Readers for the three score-file formats. Every error names the file and the row.

* RouterDC JSON: a list of ``{"question": str, "scores": {llm: float}, "cluster_id"?: int}``.
* RouterBench CSV: ``prompt`` (a Python list literal of strings), ``eval_name``, one score column
  per LLM, ``<llm>|total_cost``, ``<llm>|model_response``, optional ``cluster_id``.
* Our JSONL: one object per line,
  ``{"query": str, "scores": {llm: float}, "task"?: str, "metric"?: str, "cluster"?: int,
  "costs"?: {llm: float}}``.

:func:`load_scores` reads any of them and returns one :class:`ScoreSet` per task, in the order
tasks first appear; rows keep their file order within a task. :func:`read_queries` returns the
query texts of any supported file (or a plain text file, one query per line) in file order.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from routerdc.limits import BOUNDS
from routerdc.data.registry import canonical_task, task_metric
from routerdc.data.scoreset import METRICS, DataError, ScoreSet

MISSING: tuple[str, ...] = ("error", "drop", "zero")
_RESPONSE, _COST = "|model_response", "|total_cost"
_CSV_RESERVED = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to", "cluster_id"}


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise DataError(f"{where}: {what} is not a number ({value!r})")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} is not a number ({value!r})") from None
    if not math.isfinite(out):
        raise DataError(f"{where}: {what} is not finite ({value!r})")
    return out


def _int(value: Any, where: str, what: str) -> int:
    x = _number(value, where, what)
    if x != int(x):
        raise DataError(f"{where}: {what} must be an integer ({value!r})")
    return int(x)


def _missing_policy(empty: list[str], missing: str, where: str, field: str) -> bool:
    """The one missing-score policy of every reader: whether to keep a row whose ``empty`` LLMs have no
    ``field`` (``zero``: kept, counted as 0; ``drop``: skipped, False); ``error`` raises, naming them."""
    if not empty or missing == "zero":
        return True
    if missing == "drop":
        return False
    raise DataError(f"{where}: no {field} for {empty}; pass missing='drop' (CLI: --missing drop) to skip "
                    "such rows or missing='zero' to count them as 0")


def _score_row(obj: Any, where: str, field: str, llms: list[str] | None, missing: str = "error") -> tuple[list[str], list[float] | None]:
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{where}: {field!r} must be a non-empty object of LLM name -> score")
    if getattr(obj, "dups", None):
        raise DataError(f"{where}: duplicate LLM names in {field!r}: {obj.dups}")
    names = [str(k) for k in obj]
    if llms is not None and set(names) != set(llms):
        missing, extra = sorted(set(llms) - set(names)), sorted(set(names) - set(llms))
        raise DataError(
            f"{where}: the LLM set differs from the first row's; missing {missing}, unexpected {extra}"
        )
    order = llms if llms is not None else names
    if not _missing_policy([n for n in order if obj[n] is None], missing, where, field):
        return order, None
    return order, [_number(0.0 if obj[n] is None else obj[n], where, f"{field}[{n!r}]") for n in order]


class _Rows:
    """Accumulates validated rows and groups them by task."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.llms: list[str] | None = None
        self.by_task: dict[str, dict[str, list]] = {}

    def add(self, row: int, task: str, metric: str | None, query: str, scores: list[float],
            cluster: int | None, costs: list[float] | None, responses: list[str] | None) -> None:
        g = self.by_task.setdefault(task, {k: [] for k in (
            "metric", "query", "scores", "cluster", "costs", "responses", "rows")})
        where = f"{self.source}, row {row}"
        if g["metric"] and metric is not None and g["metric"][0] != metric:
            raise DataError(f"{where}: metric {metric!r} differs from {g['metric'][0]!r} of task {task!r}")
        if not g["metric"]:
            g["metric"].append(metric)
        for key, value in (("cluster", cluster), ("costs", costs), ("responses", responses)):
            if g["rows"] and (value is None) != (g[key][0] is None):
                raise DataError(f"{where}: {key!r} present in some rows of task {task!r} but not others")
            g[key].append(value)
        g["query"].append(query)
        g["scores"].append(scores)
        g["rows"].append(row)

    def sets(self) -> list[ScoreSet]:
        if not self.by_task or self.llms is None:
            raise DataError(f"{self.source}: the file holds no rows")
        out = []
        for task, g in self.by_task.items():
            metric = g["metric"][0] or task_metric(task)
            out.append(ScoreSet(
                task=task, metric=metric, llms=tuple(self.llms), queries=tuple(g["query"]),
                scores=np.asarray(g["scores"], dtype=np.float32),
                clusters=None if g["cluster"][0] is None else np.asarray(g["cluster"], dtype=np.int64),
                costs=None if g["costs"][0] is None else np.asarray(g["costs"], dtype=np.float64),
                responses=None if g["responses"][0] is None else tuple(tuple(r) for r in g["responses"]),
                source=self.source, rows=tuple(g["rows"]),
            ))
        return out


def _query(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: {field!r} is empty")
    return value


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


class _Obj(dict):
    """A JSON object that remembers keys it saw twice (``json`` keeps the last silently)."""

    dups: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    obj.dups = sorted({k for k, _ in pairs if sum(1 for k2, _ in pairs if k2 == k) > 1}) if len(obj) != len(pairs) else []
    return obj


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except RecursionError:
        raise DataError(f"{where}: the JSON is nested too deeply to be a score file") from None


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type (for messages)."""
    if isinstance(value, dict):
        keys = list(value)[:5]
        return f"an object (keys {keys})" if keys else "an empty object"
    for t, name in ((bool, "a boolean"), (str, "a string"), (int, "a number"), (float, "a number"),
                    (list, "a list"), (type(None), "null")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def _load_json(path: Path, task: str, metric: str | None, missing: str = "error") -> list[ScoreSet]:
    try:
        data = _json(_read_text(path), str(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or an object with a \"data\" list), "
                        f"got {_kind(data)}")
    return _load_objects(path, ((i + 1, obj) for i, obj in enumerate(data)), task, metric, missing)


def _load_jsonl(path: Path, task: str, metric: str | None, missing: str = "error") -> list[ScoreSet]:
    def rows() -> Iterable[tuple[int, Any]]:
        for n, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield n, _json(line, f"{path}, line {n}")
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
    return _load_objects(path, rows(), task, metric, missing)


def _load_objects(path: Path, rows: Iterable[tuple[int, Any]], task: str, metric: str | None, missing: str) -> list[ScoreSet]:
    acc = _Rows(str(path))
    dropped: list[int] = []
    for row, obj in rows:
        where = f"{path}, row {row}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected an object, got {_kind(obj)}")
        qfield = "query" if "query" in obj else "question"
        if qfield not in obj:
            raise DataError(f"{where}: missing field 'query' (or 'question')")
        if "scores" not in obj:
            raise DataError(f"{where}: missing field 'scores'")
        query = _query(obj[qfield], where, qfield)
        acc.llms, scores = _score_row(obj["scores"], where, "scores", acc.llms, missing)
        if scores is None:
            dropped.append(row)
            continue
        row_task = canonical_task(str(obj["task"])) if obj.get("task") is not None else task
        row_metric = obj.get("metric", metric)
        if row_metric is not None and row_metric not in METRICS:
            raise DataError(f"{where}: metric must be one of {METRICS}, got {row_metric!r}")
        cfield = "cluster" if "cluster" in obj else "cluster_id"
        cluster = None if obj.get(cfield) is None else _int(obj[cfield], where, cfield)
        costs = None
        if obj.get("costs") is not None:
            _, costs = _score_row(obj["costs"], where, "costs", acc.llms)
        acc.add(row, row_task, row_metric, query, scores, cluster, costs, None)
    if dropped:
        warnings.warn(f"{path}: skipped {len(dropped)} rows with missing scores (rows {dropped})", stacklevel=3)
    return acc.sets()


def _parse_list_literal(cell: str, where: str, field: str) -> str:
    """RouterBench stores texts as a Python list literal of strings: join its items."""
    text = cell.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return cell
    if len(text) > BOUNDS.max_cell_chars:  # ast.literal_eval of a huge cell costs GBs
        raise DataError(f"{where}: {field!r} has {len(text):,} characters; a list-literal cell may have at most "
                        f"{BOUNDS.max_cell_chars:,}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise DataError(f"{where}: {field!r} is not a valid list literal") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {field!r} must be a list of strings")
    if len(value) > BOUNDS.max_list_items:
        raise DataError(f"{where}: {field!r} is a list of {len(value):,} strings; at most "
                        f"{BOUNDS.max_list_items:,} are accepted")
    return "\n".join(value)


def _load_csv(path: Path, task: str, metric: str | None, missing: str = "error") -> list[ScoreSet]:
    csv.field_size_limit(1 << 30)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"{path}: cannot parse the CSV header ({exc})") from None
    header = [h.strip() for h in header]
    dup = sorted({h for h in header if h and header.count(h) > 1})
    if dup:
        raise DataError(f"{path}: duplicate columns {dup}")
    if "prompt" not in header:
        raise DataError(f"{path}: missing column 'prompt'")
    llms = [h for h in header if h not in _CSV_RESERVED and "|" not in h and not h.startswith("Unnamed:")]
    if not llms:
        raise DataError(f"{path}: no LLM score columns")
    col = {h: i for i, h in enumerate(header)}
    has_costs = all(f"{m}{_COST}" in col for m in llms)
    has_resp = any(f"{m}{_RESPONSE}" in col for m in llms)
    acc = _Rows(str(path))
    acc.llms = llms
    dropped: list[int] = []
    for n, cells in enumerate(reader, start=2):
        if not cells:
            continue
        where = f"{path}, row {n}"
        if len(cells) != len(header):
            raise DataError(f"{where}: {len(cells)} cells, expected {len(header)}")
        query = _query(_parse_list_literal(cells[col["prompt"]], where, "prompt"), where, "prompt")
        if not _missing_policy([m for m in llms if not cells[col[m]].strip()], missing, where, "score"):
            dropped.append(n)
            continue
        scores = [_number(cells[col[m]] if cells[col[m]].strip() else 0.0, where, f"score of {m!r}") for m in llms]
        row_task = canonical_task(cells[col["eval_name"]]) if "eval_name" in col and cells[col["eval_name"]] else task
        cluster = _int(cells[col["cluster_id"]], where, "cluster_id") if "cluster_id" in col else None
        costs = [_number(cells[col[f"{m}{_COST}"]], where, f"cost of {m!r}") for m in llms] if has_costs else None
        responses = None
        if has_resp:
            responses = [
                _parse_list_literal(cells[col[f"{m}{_RESPONSE}"]], where, f"{m}{_RESPONSE}")
                if f"{m}{_RESPONSE}" in col else "" for m in llms
            ]
        acc.add(n, row_task, metric, query, scores, cluster, costs, responses)
    if dropped:
        warnings.warn(f"{path}: skipped {len(dropped)} rows with missing scores (rows {dropped})", stacklevel=3)
    return acc.sets()


_LOADERS = {".json": _load_json, ".jsonl": _load_jsonl, ".csv": _load_csv}


def load_scores(
    path: str | os.PathLike, *, task: str | None = None, metric: str | None = None,
    missing: str = "error",
) -> list[ScoreSet]:
    """Read a score file (``.json``, ``.jsonl`` or ``.csv``): one :class:`ScoreSet` per task.

    Args:
        path: the file.
        task: the task name for rows that carry none (default: from the file name, so
            ``gsm8k-train.json`` is task ``gsm8k``).
        metric: force the metric type; default: the row's ``metric`` field, else the known
            task's metric, else ``multi_attempt``.
        missing: what to do with a row whose score is absent (an empty CSV cell, a JSON
            ``null``): ``"error"`` (default), ``"drop"`` the row with a warning naming the rows,
            or count it as ``"zero"``. Text that is not a number, NaN and inf are always errors.
    """
    if missing not in MISSING:
        raise DataError(f"missing must be one of {MISSING}, got {missing!r}")
    p = Path(path)
    loader = _LOADERS.get(p.suffix.lower())
    if loader is None:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; expected one of {sorted(_LOADERS)}")
    if metric is not None and metric not in METRICS:
        raise DataError(f"metric must be one of {METRICS}, got {metric!r}")
    return loader(p, canonical_task(task or p.stem), metric, missing)


def load_score_set(path: str | os.PathLike, **kwargs: Any) -> ScoreSet:
    """Read a score file that holds exactly one task."""
    sets = load_scores(path, **kwargs)
    if len(sets) != 1:
        raise DataError(f"{path}: holds {len(sets)} tasks ({[s.task for s in sets]}); expected one")
    return sets[0]


def load_many(paths: Sequence[str | os.PathLike], **kwargs: Any) -> list[ScoreSet]:
    """Read several files; all must name the same LLMs. Columns follow the first file's order."""
    sets = [s for p in paths for s in load_scores(p, **kwargs)]
    if not sets:
        raise DataError("no score files given")
    llms = sets[0].llms
    return [s.align(llms) for s in sets]


def read_queries(path: str | os.PathLike) -> list[str]:
    """Query texts of a score file, or of a text file with one query per line, in file order.

    Scores are not needed to route, so rows with missing scores are kept.
    """
    p = Path(path)
    if p.suffix.lower() in _LOADERS:
        sets = load_scores(p, missing="zero")
        pairs = sorted((row, q) for s in sets for row, q in zip(s.rows, s.queries))
        return [q for _, q in pairs]
    lines = [line for line in _read_text(p).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{p}: no queries")
    return lines


def to_records(s: ScoreSet) -> list[dict[str, Any]]:
    """Rows of ``s`` as objects of our JSONL format."""
    out = []
    for i, q in enumerate(s.queries):
        rec: dict[str, Any] = {"query": q, "scores": {m: float(v) for m, v in zip(s.llms, s.scores[i])},
                               "task": s.task, "metric": s.metric}
        if s.clusters is not None:
            rec["cluster"] = int(s.clusters[i])
        if s.costs is not None:
            rec["costs"] = {m: float(v) for m, v in zip(s.llms, s.costs[i])}
        out.append(rec)
    return out


def write_jsonl(sets: Sequence[ScoreSet], path: str | os.PathLike) -> Path:
    """Write ``sets`` to one JSONL file in our format (atomically: temp file + rename)."""
    from routerdc.io import atomic_file

    p = Path(path)
    with atomic_file(p, "w", encoding="utf-8") as f:
        for s in sets:
            for rec in to_records(s):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return p
