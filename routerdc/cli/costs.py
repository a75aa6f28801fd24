"""``python -m routerdc costs`` (set a router's expected cost per LLM) and the ``--cost-sweep`` part
of ``evaluate``. Registered by :mod:`routerdc.cli.main`; argparse only at import."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from routerdc.data.registry import DATA_ENV


def add_costs_command(sub: Any) -> None:
    p = sub.add_parser("costs", help="set a router's expected cost per query of each LLM (for --cost-weight routing)")
    p.add_argument("--data-dir", help=f"score-data directory (default: ${DATA_ENV} or ../shared/data)")
    p.add_argument("--checkpoint", required=True, help="router folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scores", nargs="+", help="score files with recorded costs (e.g. RouterBench's): the mean per query")
    src.add_argument("--models-config", help="a models config: cost_per_1k_input x prompt tokens + cost_per_1k_output x "
                                             "answer tokens, per LLM")
    p.add_argument("--prompt-tokens", type=float, default=None,
                   help="with --models-config: mean prompt tokens per query (default: from --queries, 4 characters a token)")
    p.add_argument("--queries", nargs="+", help="with --models-config: score files whose queries give the mean prompt length")
    p.add_argument("--answer-tokens", type=float, default=256.0,
                   help="with --models-config: mean answer tokens per query (default: 256)")
    p.add_argument("--output", help="router folder to write (default: rewrite --checkpoint's config.json in place)")


def cmd_costs(args: argparse.Namespace) -> int:
    from routerdc.checkpoint import RouterMeta
    from routerdc.evaluate.cost_curve import mean_costs
    from routerdc.data import load_many, resolve_file

    meta = RouterMeta.read(args.checkpoint)
    names = list(meta.llm_names)
    if args.scores:
        sets = load_many([resolve_file(f, args.data_dir) for f in args.scores], missing="drop")
        recorded = mean_costs([s.align(names) for s in sets])
        source = {"from": "recorded costs", "files": [s.source for s in sets]}
    else:
        from routerdc.serving.config import load_models_config

        models = {m.name: m for m in load_models_config(args.models_config).models}
        unknown = sorted(set(names) - set(models))
        if unknown:
            raise ValueError(f"{args.models_config}: no entry for the router's LLM(s) {unknown}")
        prompt = args.prompt_tokens
        if prompt is None:
            if not args.queries:
                raise ValueError("give --prompt-tokens or --queries (score files whose queries set the prompt length)")
            qs = [q for s in load_many([resolve_file(f, args.data_dir) for f in args.queries], missing="drop")
                  for q in s.queries]
            prompt = sum(len(q) for q in qs) / max(len(qs), 1) / 4.0
        recorded = {n: (models[n].cost_per_1k_input or 0.0) * prompt / 1000
                    + (models[n].cost_per_1k_output or 0.0) * args.answer_tokens / 1000 for n in names}
        source = {"from": "models config prices", "models_config": str(args.models_config),
                  "prompt_tokens": prompt, "answer_tokens": args.answer_tokens}
    meta = meta.with_router(llm_cost=[recorded[n] for n in names]).with_extra(costs=source)
    out = meta.write(args.checkpoint, args.output)
    print(json.dumps({"output": str(out), "llm_cost": dict(zip(names, meta.router["llm_cost"])), **source}, indent=2))
    return 0


def run_cost_sweep(specs: Mapping[str, Sequence[str]], loaded: dict[str, Any], test_sets: Sequence[Any],
                   args: argparse.Namespace, train_sets: Sequence[Any] | None) -> str:
    """``evaluate --cost-sweep N``: sweep the routers of ``specs`` (label -> folders; ``loaded`` holds
    those already loaded) over N cost weights on ``test_sets``, with the single LLMs, the oracle and,
    given ``train_sets`` (``--baselines``), k-NN and the per-task baseline; write the curves beside the table
    (``<output>.cost_sweep.json``, ``<markdown>.cost_sweep.md``) and return the summary (markdown)."""
    from routerdc.evaluate.baselines import KNNRouter
    from routerdc.evaluate.cost_sweep import sweep
    from routerdc.evaluate.evaluator import task_scores as per_task_scores
    from routerdc.inference.embed_cache import cached_embeddings, embedding_key, router_embeddings
    from routerdc.inference import default_engine, load_router
    from routerdc.model.router import RouterDC

    routers = {}
    for label, dirs in specs.items():
        for d in dirs:
            routers[label if len(dirs) == 1 else f"{label} [{Path(d).name}]"] = (
                loaded[d] if d in loaded else load_router(d, args.engine or default_engine(), data_dir=args.data_dir))
    given = {}
    for label, r in routers.items():
        embs = [router_embeddings(r, s.queries, key=embedding_key(r)) for s in test_sets]
        given[label] = (r.config, r.keys, embs, r.bank)
    knn_scores = task_scores = None
    if train_sets:
        first = next(iter(routers.values()))
        llms = first.config.llm_names
        untrained = RouterDC.build(llms, encoder=first.config.encoder, pooling=first.config.pooling,
                                   max_length=first.config.max_length)
        tr = [s.align(llms) for s in train_sets]
        import numpy as np

        model = KNNRouter(k=10).fit(cached_embeddings(untrained, [q for s in tr for q in s.queries]),
                                    np.concatenate([s.scores for s in tr]))
        knn_scores = [model.predict_scores(cached_embeddings(untrained, s.queries)) for s in test_sets]
        task_scores = per_task_scores(tr, test_sets)
    result = sweep(test_sets, given, n=args.cost_sweep, knn_scores=knn_scores, task_scores=task_scores)
    md = result.to_markdown()
    if args.output:
        Path(args.output).with_suffix(".cost_sweep.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n",
                                                                     encoding="utf-8")
    if args.markdown:
        Path(args.markdown).with_suffix(".cost_sweep.md").write_text(md, encoding="utf-8")
    return md
