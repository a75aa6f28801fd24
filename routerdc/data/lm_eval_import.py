"""Score rows from lm-evaluation-harness logs (``lm_eval ... --log_samples --output_path DIR``).

lm-eval 0.4.13 writes, per run, ``DIR/<model_name_sanitized>/results_<date>.json`` (each task's
config under ``configs``) and ``samples_<task>_<date>.jsonl`` with the same ``<date>``: one JSON
line per (document, filter) with ``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``,
``filtered_resps``, ``filter``, ``metrics``, ``doc_hash`` and the metric values.

Scores, as the RouterDC paper built them:

- multiple choice: the softmax over the choices' log-likelihoods at the target choice when the
  LLM got it right (``acc`` = 1), else 0 (``metric: probability``);
- generative, one answer per document: the task's first metric as logged (``probability``);
- generative with ``repeats: N``: the fraction of the N answers that the task's own filter and
  metric (the harness' functions, rebuilt from the logged config) count correct (``multi_attempt``);
  code tasks (``unsafe_code``, ``multi_attempt`` with any ``repeats``) log pass@1 over their N
  programs, which is that fraction already.

Given each LLM's :class:`~.lm_eval_costs.Pricing`, every row also gets ``costs`` (dollars per
LLM, :func:`~.lm_eval_costs.row_cost`). LLMs are aligned by ``doc_id`` and ``doc_hash``, never by
text. Every error names the file, the task and the document; nothing is written on error.
lm_eval is imported only for ``repeats`` tasks.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from routerdc.data.lm_eval_costs import Pricing, row_cost
from routerdc.data.scoreset import DataError, ScoreSet

SAMPLE_FIELDS = ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash")
_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")
_CHECKED = ("num_fewshot", "repeats", "output_type", "doc_to_text", "generation_kwargs", "filter_list")
_REDUCERS = ("take_first", "majority_vote")


@dataclass(frozen=True)
class TaskLog:
    """One task of one LLM's run: its samples file, config and rows by filter then doc_id."""

    task: str
    path: Path
    config: dict[str, Any]
    rows: dict[str, dict[int, dict[str, Any]]]


def _run_folder(folder: Path) -> Path:
    """``folder`` itself when it holds samples files, else its one model subfolder that does."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory of lm_eval output")
    if any(_SAMPLES.match(p.name) for p in folder.iterdir()):
        return folder
    subs = sorted(d for d in folder.iterdir() if d.is_dir() and any(_SAMPLES.match(p.name) for p in d.iterdir()))
    if not subs:
        raise DataError(f"{folder}: no samples_<task>_<date>.jsonl files (run lm_eval with --log_samples)")
    if len(subs) > 1:
        raise DataError(f"{folder}: several model folders ({', '.join(d.name for d in subs)}); name one of them")
    return subs[0]


def _read_samples(path: Path, task: str) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: task {task}: cannot read: {exc}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: task {task}: line {n} is not JSON ({exc.msg}); truncated file?") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: task {task}: line {n} is not a JSON object")
        missing = [f for f in SAMPLE_FIELDS if f not in obj]
        if missing:
            raise DataError(f"{path}: task {task}: line {n} (doc_id {obj.get('doc_id')!r}) lacks {missing}: "
                            f"not lm-eval 0.4.13 --log_samples output")
        rows.append(obj)
    if not rows:
        raise DataError(f"{path}: task {task}: empty samples file")
    return rows


def read_run(folder: str | Path, tasks: Sequence[str] | None = None) -> dict[str, TaskLog]:
    """The newest log of each task under ``folder`` (a run's output folder or its model subfolder)."""
    run = _run_folder(Path(folder))
    found: dict[str, list[tuple[str, Path]]] = {}
    for p in run.iterdir():
        m = _SAMPLES.match(p.name)
        if m:
            found.setdefault(m["task"], []).append((m["date"], p))
    if tasks:
        absent = [t for t in tasks if t not in found]
        if absent:
            raise DataError(f"{run}: no samples for task(s) {absent} (found {sorted(found)})")
        found = {t: found[t] for t in tasks}
    out: dict[str, TaskLog] = {}
    for task in sorted(found):
        date, path = max(found[task])
        if len(found[task]) > 1:
            warnings.warn(f"{run}: task {task} was run {len(found[task])} times; taking the newest, {path.name}",
                          stacklevel=2)
        res = run / f"results_{date}.json"
        try:
            results = json.loads(res.read_text(encoding="utf-8"))
            config = results["configs"][task]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{res}: task {task}: cannot read its config from the run's results file "
                            f"({type(exc).__name__}: {exc})") from None
        rows: dict[str, dict[int, dict[str, Any]]] = {}
        for r in _read_samples(path, task):
            by = rows.setdefault(str(r["filter"]), {})
            if r["doc_id"] in by:
                raise DataError(f"{path}: task {task}: doc_id {r['doc_id']} appears twice for filter {r['filter']!r}")
            by[r["doc_id"]] = r
        out[task] = TaskLog(task, path, config, rows)
    return out


def filter_names(config: Mapping[str, Any]) -> list[str]:
    """The filters a task logs, in its config's order (``none`` when it has no filter_list)."""
    return [str(f["name"]) for f in config.get("filter_list") or []] or ["none"]


def _softmax_at(lls: list[float], i: int) -> float:
    top = max(lls)
    return math.exp(lls[i] - top) / sum(math.exp(x - top) for x in lls)


def _choice_index(row: dict[str, Any], where: str) -> int:
    target = str(row["target"])
    conts = [a.get("arg_1") for a in row["arguments"].values()]
    if re.fullmatch(r"\d+", target) and int(target) < len(conts):
        return int(target)
    stripped = [str(c).strip() for c in conts]
    if target.strip() in stripped:
        return stripped.index(target.strip())
    raise DataError(f"{where}: target {target!r} is neither a choice index nor a choice")


def _metric_kwargs(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = (config.get("metric_list") or [{}])[0]
    name = spec.get("metric")
    if not isinstance(name, str):
        raise DataError(f"task {config.get('task')}: its first metric {name!r} is not a registered metric name")
    return name, {k: v for k, v in spec.items() if k not in ("metric", "aggregation", "higher_is_better")}


def _attempts_score(row: dict[str, Any], config: Mapping[str, Any], filt: str, where: str) -> float:
    """Fraction of a document's answers that the task's own filter and metric count correct."""
    import lm_eval.filters  # noqa: F401  (registers the filters)
    from lm_eval.api.registry import get_filter, get_metric

    answers = row["resps"][0] if row["resps"] else []
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{where}: no answers in 'resps'")
    steps = next((f["filter"] for f in config.get("filter_list") or [] if f["name"] == filt), [])
    resps: Any = [list(answers)]
    for step in steps:
        if step["function"] in _REDUCERS:
            continue  # keep every answer: the harness would score only the first
        kwargs = {k: v for k, v in step.items() if k != "function"}
        resps = get_filter(step["function"])(**kwargs).apply(resps, [row["doc"]])
    filtered = list(resps)[0]
    name, kwargs = _metric_kwargs(config)
    fn = get_metric(name)
    if fn is None:
        raise DataError(f"{where}: metric {name!r} is not in lm_eval's registry")
    good = []
    for a in filtered:
        v = fn(references=[str(row["target"])], predictions=[str(a)], **kwargs)
        good.append(float(v[name] if isinstance(v, dict) else v))
    return sum(good) / len(good)


def score_row(row: dict[str, Any], config: Mapping[str, Any], filt: str, where: str) -> float:
    """The RouterDC score of one logged document (see the module docstring)."""
    kind = config.get("output_type")
    if kind == "multiple_choice":
        try:
            lls = [float(x[0]) for x in row["filtered_resps"]]
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{where}: 'filtered_resps' are not [log-likelihood, is_greedy] pairs") from None
        acc = row.get("acc")
        if acc is None:
            raise DataError(f"{where}: no 'acc' value logged")
        return _softmax_at(lls, _choice_index(row, where)) if float(acc) == 1.0 else 0.0
    if kind == "generate_until":
        if config.get("unsafe_code"):
            # code tasks log pass@1 over the N programs per problem: the fraction that pass the tests
            # (their metric is a function, so the config holds its source, not a name: read the logged one)
            name = next(iter(row["metrics"]), None)
            if name is None or name not in row:
                raise DataError(f"{where}: no pass@k value logged")
            return float(row[name])
        if int(config.get("repeats") or 1) > 1:
            return _attempts_score(row, config, filt, where)
        name, _ = _metric_kwargs(config)
        if name not in row:
            raise DataError(f"{where}: metric {name!r} not logged")
        return float(row[name])
    raise DataError(f"{where}: output_type {kind!r} is not supported (multiple_choice, generate_until)")


def _query(row: dict[str, Any], config: Mapping[str, Any], template: Any, where: str) -> str:
    if template is not None:
        return str(template.render(**row["doc"]))
    if int(config.get("num_fewshot") or 0) == 0:
        return str(row["arguments"]["gen_args_0"]["arg_0"])
    text = config.get("doc_to_text")
    if isinstance(text, str) and "{{" in text:  # the zero-shot prompt, without the few-shot examples
        import jinja2

        return jinja2.Template(text).render(**row["doc"])
    if isinstance(text, str) and text in row["doc"]:
        return str(row["doc"][text])
    raise DataError(f"{where}: cannot rebuild the zero-shot query of a {config.get('num_fewshot')}-shot run "
                    f"from doc_to_text {text!r}; pass --query-template")


def import_runs(runs: Mapping[str, str | Path], *, tasks: Sequence[str] | None = None, filter: str | None = None,
                missing: str = "error", query_template: str | None = None,
                pricing: Mapping[str, Pricing] | None = None) -> list[ScoreSet]:
    """One :class:`ScoreSet` per task, rows ordered by ``doc_id``, columns in the order of ``runs``;
    with ``pricing`` (one :class:`Pricing` per LLM of ``runs``), each row's ``costs`` too."""
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', not {missing!r}")
    if not runs:
        raise DataError("no LLMs given")
    if pricing is not None and set(pricing) != set(runs):
        raise ValueError(f"pricing must name exactly the LLMs {sorted(runs)}, not {sorted(pricing)}")
    logs = {name: read_run(folder, tasks) for name, folder in runs.items()}
    names = list(logs)
    first = logs[names[0]]
    template = None
    if query_template is not None:
        import jinja2

        template = jinja2.Template(query_template)
    if filter is not None and not any(filter in filter_names(t.config) for t in first.values()):
        raise DataError(f"--filter {filter!r}: no task logs it")
    out = []
    for task in sorted(first):
        for name in names[1:]:
            if task not in logs[name]:
                raise DataError(f"{runs[name]}: LLM {name} has no samples for task {task}")
            a, b = first[task].config, logs[name][task].config
            for key in _CHECKED:
                if a.get(key) != b.get(key):
                    raise DataError(f"task {task}: config {key!r} differs between {names[0]} ({a.get(key)!r}, "
                                    f"{first[task].path}) and {name} ({b.get(key)!r}, {logs[name][task].path})")
        config = first[task].config
        avail = filter_names(config)
        filt = filter if filter in avail else avail[0]
        ref = first[task].rows.get(filt)
        if ref is None:
            raise DataError(f"{first[task].path}: task {task}: no rows for filter {filt!r}")
        keep, dropped = [], []
        for doc_id in sorted(ref):
            h = ref[doc_id]["doc_hash"]
            bad = [n for n in names[1:] if logs[n][task].rows.get(filt, {}).get(doc_id, {}).get("doc_hash") != h]
            extra = [n for n in names[1:] if doc_id in logs[n][task].rows.get(filt, {})]
            if bad:
                why = "a different doc_hash" if set(bad) <= set(extra) else "no such document"
                if missing == "error":
                    n = bad[0]
                    raise DataError(f"{logs[n][task].path}: task {task}: doc_id {doc_id}: {why} for LLM {n} "
                                    f"(vs {first[task].path}); use --missing drop to skip it")
                dropped.append(doc_id)
            else:
                keep.append(doc_id)
        for n in names[1:]:
            surplus = sorted(set(logs[n][task].rows.get(filt, {})) - set(ref))
            if surplus and missing == "error":
                raise DataError(f"{logs[n][task].path}: task {task}: doc_id {surplus[0]} missing for LLM {names[0]}")
            dropped.extend(surplus)
        if dropped:
            warnings.warn(f"task {task}: dropped {len(dropped)} document(s) not logged alike for every LLM: "
                          f"doc_id {sorted(set(dropped))}", stacklevel=2)
        if not keep:
            raise DataError(f"task {task}: no document logged for every LLM")
        queries, scores, costs = [], [], []
        for doc_id in keep:
            row0 = ref[doc_id]
            queries.append(_query(row0, config, template, f"{first[task].path}: task {task}: doc_id {doc_id}"))
            scores.append([score_row(logs[n][task].rows[filt][doc_id], config, filt,
                                     f"{logs[n][task].path}: task {task}: doc_id {doc_id}") for n in names])
            if pricing is not None:
                costs.append([row_cost(logs[n][task].rows[filt][doc_id], config, pricing[n],
                                       f"{logs[n][task].path}: task {task}: doc_id {doc_id}") for n in names])
        multi = config.get("output_type") == "generate_until" and (int(config.get("repeats") or 1) > 1
                                                                   or bool(config.get("unsafe_code")))
        import numpy as np

        label = task if len(avail) == 1 else f"{task}:{filt}"
        out.append(ScoreSet(task=label, metric="multi_attempt" if multi else "probability", llms=tuple(names),
                            queries=tuple(queries), scores=np.asarray(scores, dtype=np.float32),
                            costs=np.asarray(costs, dtype=np.float64) if pricing is not None else None))
    return out
