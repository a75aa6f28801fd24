"""``python -m routerdc import-lm-eval`` and ``collect``: score data from lm-evaluation-harness runs
(see :mod:`routerdc.data.lm_eval_import` and :mod:`routerdc.collect`). Registered by
:mod:`routerdc.cli.main`; argparse only at import."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_collect_commands(sub: Any) -> None:
    """Add ``import-lm-eval`` and ``collect`` to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser("import-lm-eval", help="score rows (our JSONL) from lm_eval --log_samples output, one per LLM")
    p.add_argument("--llm", action="append", required=True, metavar="NAME=DIR",
                   help="an LLM's name and its lm_eval --output_path folder (or its model subfolder); repeat")
    p.add_argument("--models-config", help="models config with the LLMs' prices (cost_per_1k_input/output) and "
                                           "tokenizers: fills each row's costs when every LLM has both")
    _common(p)

    p = sub.add_parser("collect", help="run lm_eval on every candidate of a models config, then import the scores")
    p.add_argument("--models-config", required=True, help="models config (YAML/JSON) naming the candidates")
    p.add_argument("--limit", type=int, help="documents per task (lm_eval --limit)")
    p.add_argument("--include-path", help="folder of extra task YAMLs (e.g. configs/lm_eval)")
    p.add_argument("--work-dir", help="where each candidate's lm_eval output goes (default: OUTPUT minus suffix + "
                                      "'.lm_eval/')")
    p.add_argument("--batch-size", default="1", help="lm_eval --batch_size (default 1)")
    p.add_argument("--force", action="store_true", help="rerun candidates whose samples are already there")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="let code tasks run the generated code (HF_ALLOW_CODE_EVAL=1, --confirm_run_unsafe_code)")
    _common(p, tasks_required=True)


def _common(p: argparse.ArgumentParser, tasks_required: bool = False) -> None:
    p.add_argument("--output", required=True, help="output JSONL file (our score format), written atomically")
    p.add_argument("--tasks", required=tasks_required, help="comma-separated task names (default for import: all)")
    p.add_argument("--filter", help="for tasks logging several filters, the one to score (default: the first)")
    p.add_argument("--query-template", help="Jinja template over the document's fields for the query "
                                            "(default: the zero-shot prompt)")
    if p.prog.endswith("import-lm-eval"):
        p.add_argument("--missing", default="error", choices=("error", "drop"),
                       help="a document missing or different for one LLM: error, or drop it with a warning")


def _tasks(arg: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in arg.split(",") if t.strip()) if arg else None


def _write(sets: list, output: str) -> int:
    from routerdc.data.formats import write_jsonl

    path = write_jsonl(sets, output)
    rows = sum(len(s.queries) for s in sets)
    costs = "with costs" if all(s.costs is not None for s in sets) else "no costs"
    print(f"wrote {rows} rows ({', '.join(f'{s.task}: {len(s.queries)} {s.metric}' for s in sets)}) "
          f"for {len(sets[0].llms)} LLMs, {costs}, to {path}", file=sys.stderr)
    return 0


def cmd_import_lm_eval(args: argparse.Namespace) -> int:
    from routerdc.data.lm_eval_import import import_runs
    from routerdc.data.scoreset import DataError

    runs: dict[str, str] = {}
    for item in args.llm:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise DataError(f"--llm {item!r}: expected NAME=DIR")
        if name in runs:
            raise DataError(f"--llm: LLM {name!r} named twice ({runs[name]} and {folder})")
        runs[name] = folder
    prices = None
    if args.models_config:
        from routerdc.collect import pricing
        from routerdc.serving.config import load_models_config

        prices, note = pricing(load_models_config(args.models_config), list(runs), where=args.models_config)
        print(f"[import-lm-eval] {note}", file=sys.stderr)
    sets = import_runs(runs, tasks=_tasks(args.tasks), filter=args.filter, missing=args.missing,
                       query_template=args.query_template, pricing=prices)
    return _write(sets, args.output)


def cmd_collect(args: argparse.Namespace) -> int:
    from routerdc.collect import CollectOptions, collect
    from routerdc.serving.config import load_models_config

    config = load_models_config(args.models_config)
    out = Path(args.output)
    work = Path(args.work_dir) if args.work_dir else out.with_suffix("").with_name(out.stem + ".lm_eval")
    opts = CollectOptions(tasks=_tasks(args.tasks) or (), limit=args.limit, include_path=args.include_path,
                          batch_size=args.batch_size, force=args.force, allow_code_execution=args.allow_code_execution)
    sets = collect(config, opts, work, log=lambda m: print(m, file=sys.stderr, flush=True),
                   query_template=args.query_template, filter=args.filter, where=args.models_config)
    return _write(sets, args.output)
