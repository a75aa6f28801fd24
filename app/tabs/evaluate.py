"""The Evaluate tab: the paper's per-task table (ID / OOD with averages) for the session's router
against every LLM, the best single LLM, random and the oracle, on shipped or uploaded sets."""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd


from routerdc.data import DataError
from routerdc.evaluate.evaluator import default_id_tasks, sample_rows

from .. import plots
from ..common import clean_message, guarded, load_upload
from ..context import AppContext


def _id_tasks(view) -> tuple[str, ...]:
    return default_id_tasks(view.meta.recipe if view.meta is not None else None)


def _cap(s, n: int):
    return sample_rows([s], n)[0]


def set_choices(ctx: AppContext, key: str | None) -> tuple[list[tuple[str, str]], list[str]]:
    """The test sets that fit the router ``key`` (choices, default selection)."""
    if not key:
        return [], []
    try:
        llms = set(ctx.routers.get(key).llms)
    except Exception:  # noqa: BLE001 - the status area reports load failures
        return [], []
    fits = [e for e in ctx.data.entries if set(e.set.llms) == llms]
    choices = [(e.label, e.key) for e in fits]
    return choices, [e.key for e in fits if e.role == "test"]


def build_evaluate_tab(ctx: AppContext, session: gr.State) -> dict[str, Any]:
    choices, default = set_choices(ctx, ctx.default_key)
    with gr.Row():
        with gr.Column(scale=3):
            sets_box = gr.CheckboxGroup(choices, value=default, label="Score sets with this router's LLMs",
                                        elem_id="eval-sets")
        with gr.Column(scale=2):
            upload = gr.File(label="…and/or an uploaded score file (.json, .jsonl, .csv)",
                             file_types=[".json", ".jsonl", ".csv"], elem_id="eval-upload")
            cap = gr.Number(ctx.settings.eval_max_per_task, label="rows per set (0 = all; a sample keeps it fast)",
                            precision=0, minimum=0, elem_id="eval-cap")
    run = gr.Button("Evaluate", variant="primary", elem_id="eval-btn")
    summary = gr.Markdown(elem_id="eval-summary")
    table = gr.Dataframe(label="Accuracy (%) per task", interactive=False, elem_id="eval-table", wrap=True)
    chart = gr.Plot(label="Accuracy per task", elem_id="eval-chart")
    cost_md = gr.Markdown(elem_id="eval-cost-summary")
    cost_chart = gr.Plot(label="Quality against cost (sets with recorded costs)", elem_id="eval-cost-chart",
                         visible=False)

    @guarded
    def evaluate(keys, file, n, sess):
        view = ctx.routers.get(sess.router_key if sess else None)
        n = int(n or 0)
        entries = [ctx.data.by_key(k) for k in keys or []]
        sets, memo = [], []
        for e in entries:
            try:
                sets.append(_cap(e.set.align(view.llms), n))
            except DataError as exc:
                raise gr.Error(f"{e.label}: {clean_message(str(exc))}", print_exception=False) from None
            memo.append(ctx.data.entries.index(e))
        if file is not None:
            name = getattr(file, "orig_name", None) or str(file).rsplit("/", 1)[-1]
            for s in load_upload(file):
                try:
                    s = s.align(view.llms)
                except DataError:
                    missing = sorted(set(view.llms) - set(s.llms))
                    extra = sorted(set(s.llms) - set(view.llms))
                    raise gr.Error(f"{name}: its LLM names do not match the router {view.name}'s. Missing: "
                                   f"{missing[:6]}{'…' if len(missing) > 6 else ''}; unknown to the router: "
                                   f"{extra[:6]}{'…' if len(extra) > 6 else ''}.", print_exception=False) from None
                task = s.task if s.task not in {x.task for x in sets} else f"{s.task} (upload)"
                sets.append(_cap(dataclasses.replace(s, task=task), n))
                memo.append(None)
        if not sets:
            raise gr.Error("Choose at least one score set or upload a file.", print_exception=False)
        tasks = [s.task for s in sets]
        if len(set(tasks)) != len(tasks):
            raise gr.Error("Two chosen sets have the same task; choose one of each.", print_exception=False)
        choices = []
        for s, m in zip(sets, memo):
            if m is not None and not n:
                choices.append(view.choices(m, s, ctx.settings.cache_dir))
            else:
                routing = view.route_embeddings(view.embed_set(s, ctx.settings.cache_dir))
                col = {name_: i for i, name_ in enumerate(sets[0].llms)}
                choices.append(np.asarray([col[x] for x in routing.llms], dtype=np.int64))
        label = f"RouterDC ({view.name})"
        from routerdc.evaluate.evaluator import comparison_table  # noqa: PLC0415 - keeps start-up light

        df = comparison_table(sets, {label: choices}, id_tasks=_id_tasks(view))
        shown = df.round(2).reset_index()
        rows = sum(len(s) for s in sets)
        best = [i for i in df.index if str(i).startswith("best single")]
        note = (f"{label} on {len(sets)} set(s), {rows:,} queries"
                + (f" (a sample of at most {n} per set)" if n else "") + ". ID tasks: "
                + ", ".join(t for t in _id_tasks(view)) + ".")
        return note, shown, plots.results_bars(df, highlight=[label, "oracle", *best])

    @guarded
    def curve(keys, n, sess):
        view = ctx.routers.get(sess.router_key if sess else None)
        sets = [_cap(e.set.align(view.llms), int(n or 0)) for e in (ctx.data.by_key(k) for k in keys or [])
                if set(e.set.llms) == set(view.llms) and e.set.costs is not None]
        if not sets:
            return "", gr.update(visible=False)
        if not view.has_costs:
            return (f"The chosen sets record costs, but the router `{view.name}` has no LLM costs: `python -m "
                    f"routerdc costs --checkpoint ... --scores <training files>` adds them, then the cost/quality "
                    "curve shows here.", gr.update(visible=False))
        md, fig = cost_curve(view, sets, ctx.settings.cache_dir)
        return md, gr.update(value=fig, visible=True)

    run.click(evaluate, [sets_box, upload, cap, session], [summary, table, chart], api_name="evaluate",
              concurrency_limit=1, concurrency_id="evaluate").success(
        curve, [sets_box, cap, session], [cost_md, cost_chart], api_name="cost_curve", concurrency_id="evaluate")
    return {"sets": sets_box, "upload": upload, "run": run, "summary": summary, "table": table, "chart": chart,
            "cost_summary": cost_md, "cost_chart": cost_chart}


def cost_curve(view, sets, cache_dir: str | None = None):
    """``(summary markdown, figure)``: the router's quality against total cost over a sweep of cost
    weights on ``sets`` (which record costs), with the single LLMs, the oracle and their AIQ."""
    from routerdc.evaluate.cost_sweep import sweep  # noqa: PLC0415 - keeps start-up light

    label = f"RouterDC ({view.name})"
    result = sweep(sets, {label: (view.config, view.llm_keys, [view.embed_set(s, cache_dir) for s in sets], view.bank)}, n=15)
    curves = pd.DataFrame([{"method": c.label, "total_cost": x, "quality": y}
                           for c in result.curves for x, y in c.points])
    llms = pd.DataFrame([{"llm": n, "total_cost": c, "quality": q} for n, (c, q) in result.llm_points.items()])
    fig = plots.cost_curve_figure(curves, llms, title=f"Quality against cost on {sum(len(s) for s in sets):,} "
                                                      "queries with recorded costs")
    return result.to_markdown(), fig


def sets_update(ctx: AppContext, key: str | None):
    choices, default = set_choices(ctx, key)
    return gr.update(choices=choices, value=default)


__all__ = ["build_evaluate_tab", "cost_curve", "sets_update", "set_choices"]
