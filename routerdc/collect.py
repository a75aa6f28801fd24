"""Score data from the candidates themselves: lm-evaluation-harness once per candidate, then import.

Each candidate of a models config runs through the harness backend that fits it:

- ``transformers``: ``--model hf`` (``pretrained=<model>``, on the candidate's ``device``);
- ``vllm`` / ``openai`` with ``prompt_format: completion``: ``--model local-completions`` against the
  server's ``/v1/completions`` (multiple choice needs ``echo`` + ``logprobs`` there; vLLM and
  ``python -m routerdc serve`` provide it), tokenising with the candidate's Hugging Face tokenizer;
- ``openai`` with ``prompt_format: chat``: ``--model local-chat-completions --apply_chat_template``,
  which can do generative tasks only; a multiple-choice task is refused before anything runs.

The harness runs as ``python -m lm_eval run`` in a child process (its own progress bars), writing
``<work_dir>/<candidate>/``; a candidate whose run of the same tasks finished is skipped unless
``force``. Tasks may be groups (e.g. ``routerdc_mmlu_5shot``): every member task logged is imported.

Costs (:func:`pricing`): when every candidate declares prices and names a tokenizer (its own
``tokenizer``, or ``model`` for ``transformers`` / ``vllm``), each row gets ``costs``, counted with
that tokenizer (:mod:`routerdc.data.lm_eval_costs`); otherwise none, with one note saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from routerdc.data.lm_eval_costs import Pricing
from routerdc.data.lm_eval_import import import_runs, read_run
from routerdc.data.scoreset import DataError, ScoreSet


@dataclass(frozen=True)
class CollectOptions:
    """What to run: task names, an optional per-task document limit, extra task folders."""

    tasks: tuple[str, ...]
    limit: int | None = None
    include_path: str | None = None
    batch_size: str = "1"
    force: bool = False
    allow_code_execution: bool = False
    seed: int = 0


def pricing(config: Any, names: Sequence[str], where: str = "models config") -> tuple[dict[str, Pricing] | None, str]:
    """Each LLM's prices and token counter from ``config`` (a ModelsConfig), or ``None`` and the reason.

    The second item is the one line to show: which config the costs come from, or why there are
    none (an LLM absent from the config, without prices, or without a tokenizer to count with).
    A tokenizer that fails to load is an error (:class:`DataError`), not a silent estimate.
    """
    from routerdc.serving.backends.base import BackendUnavailable
    from routerdc.serving.backends.tokens import PromptCounter

    specs = {s.name: s for s in config.models}
    absent = [n for n in names if n not in specs]
    unpriced = [n for n in names if n in specs and not specs[n].priced]
    untokenized = [n for n in names if n in specs and specs[n].priced and not specs[n].tokenizer_source]
    why = []
    if absent:
        why.append(f"LLM(s) {absent} are not in it")
    if unpriced:
        why.append(f"LLM(s) {unpriced} have no prices (cost_per_1k_input / cost_per_1k_output)")
    if untokenized:
        why.append(f"LLM(s) {untokenized} name no tokenizer to count tokens with (set `tokenizer`)")
    if why:
        return None, f"costs not filled: {where}: " + "; ".join(why)
    out = {}
    for n in names:
        spec = specs[n]
        counter = PromptCounter(spec)
        try:
            counter.tokenizer  # load now: a broken tokenizer fails before any row is read
        except BackendUnavailable as exc:
            raise DataError(f"{where}: LLM {n!r}: {exc}") from None
        out[n] = Pricing(spec.cost_per_1k_input or 0.0, spec.cost_per_1k_output or 0.0, counter.count)
    return out, f"costs filled: {where}'s prices x each LLM's tokenizer counts"


def task_output_types(tasks: Sequence[str], include_path: str | None) -> dict[str, str]:
    """``output_type`` of each task (or each task of a group), from the harness' own task index."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    tm = TaskManager(include_path=include_path)
    out: dict[str, str] = {}
    for t in tasks:
        entry = tm.task_index.get(t)
        if entry is None:
            raise DataError(f"task {t!r} is unknown to lm_eval (include path: {include_path})")
        if entry.kind in (Kind.GROUP, Kind.TAG) or entry.yaml_path is None:
            continue  # a group's members are checked by the harness itself
        cfg = load_yaml(entry.yaml_path, resolve_func=False, recursive=True)
        out[t] = str(cfg.get("output_type", "generate_until"))
    return out


def harness_args(spec: Any, out_dir: Path, opts: CollectOptions) -> list[str]:
    """The ``lm_eval run`` command line for one candidate (a :class:`~.serving.config.ModelSpec`)."""
    args = [sys.executable, "-m", "lm_eval", "run", "--tasks", ",".join(opts.tasks), "--output_path", str(out_dir),
            "--log_samples", "--batch_size", opts.batch_size, "--seed", str(opts.seed)]
    if spec.backend == "transformers":
        args += ["--model", "hf", "--model_args", f"pretrained={spec.model},dtype=float32", "--device", spec.device]
    elif spec.backend in ("vllm", "openai"):
        tok = spec.tokenizer_source or spec.model
        base = spec.endpoint.rstrip("/")
        if spec.prompt_format == "chat" and spec.backend == "openai":
            args += ["--model", "local-chat-completions", "--apply_chat_template", "--model_args",
                     f"model={spec.model},base_url={base}/chat/completions,num_concurrent=1,max_retries=3"]
        else:
            args += ["--model", "local-completions", "--model_args",
                     f"model={spec.model},base_url={base}/completions,tokenizer_backend=huggingface,"
                     f"tokenizer={tok},num_concurrent=1,max_retries=3,max_length={spec.max_context}"]
    else:
        raise DataError(f"candidate {spec.name!r}: a {spec.backend!r} candidate has no LLM to evaluate")
    if opts.limit is not None:
        args += ["--limit", str(opts.limit)]
    if opts.include_path:
        args += ["--include_path", opts.include_path]
    if opts.allow_code_execution:
        args += ["--confirm_run_unsafe_code"]
    return args


def collect(config: Any, opts: CollectOptions, work_dir: Path, *, log: Callable[[str], None] = print,
            query_template: str | None = None, filter: str | None = None,
            where: str = "models config") -> list[ScoreSet]:
    """Run the harness for every candidate of ``config`` (a ModelsConfig, read from ``where``) and
    import the samples, with costs where the config's prices allow (:func:`pricing`)."""
    chat = [s for s in config.models if s.backend == "openai" and s.prompt_format == "chat"]
    kinds = task_output_types(opts.tasks, opts.include_path) if chat else {}  # indexing tasks takes a while
    scored = [t for t, k in kinds.items() if k != "generate_until"]
    runs: dict[str, Path] = {}
    for spec in config.models:
        if spec in chat and scored:
            raise DataError(f"candidate {spec.name!r} is served over chat completions only: it can do generative "
                            f"tasks only, not {scored} (log-likelihood needs /v1/completions with echo and "
                            f"logprobs; set prompt_format: completion if the server has it)")
        out = work_dir / spec.name
        runs[spec.name] = out
        marker = out / "routerdc-collect.json"  # the task list (names or groups) of the finished run
        want = json.dumps({"tasks": list(opts.tasks), "limit": opts.limit})
        if not opts.force and marker.is_file() and marker.read_text(encoding="utf-8") == want:
            try:
                read_run(out)
                log(f"[collect] {spec.name}: samples for {','.join(opts.tasks)} already in {out}; skipped "
                    f"(--force reruns)")
                continue
            except DataError:
                pass
        log(f"[collect] {spec.name}: lm_eval ({spec.backend}) on {','.join(opts.tasks)} -> {out}")
        if out.exists():
            shutil.rmtree(out)  # an unfinished or different run: its samples must not mix with the new ones
        env = dict(os.environ)
        if opts.allow_code_execution:
            env["HF_ALLOW_CODE_EVAL"] = "1"
        proc = subprocess.run(harness_args(spec, out, opts), env=env)
        if proc.returncode != 0:
            hint = "" if opts.allow_code_execution else ("; a task that runs generated code (unsafe_code: humaneval, "
                                                           "mbpp, cruxeval, tiny_code) needs --allow-code-execution")
            raise DataError(f"candidate {spec.name!r}: lm_eval exited with {proc.returncode} (see its output above)"
                            + hint)
        for task, t in read_run(out).items():  # a group's members are logged one file each
            log(f"[collect] {spec.name}: {task}: {sum(len(r) for r in t.rows.values())} samples in {t.path.name}")
        marker.write_text(want, encoding="utf-8")
    prices, note = pricing(config, list(runs), where)
    log(f"[collect] {note}")
    return import_runs(runs, filter=filter, query_template=query_template, pricing=prices)
