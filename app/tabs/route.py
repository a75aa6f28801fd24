"""The Route tab: route a query, see the probabilities, the margin, recorded scores and answers,
and the nearest training queries."""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd


from .. import plots
from ..common import check_query, guarded, unk_notice
from ..context import AppContext
from ..services.routers import RouterView
from ..state import Routed, Session

ANSWER_CHARS = 6_000  # recorded answers from the data sets


def _cost_weight(view: RouterView, lam: Any, notices: list[str] | None = None) -> float:
    """The cost weight to route with: the slider's value, or 0 (with a notice) for a router without costs."""
    lam = float(lam or 0.0)
    if lam > 0 and not view.has_costs:
        if notices is not None:
            notices.append(f"The router {view.name} has no LLM costs (python -m routerdc costs adds them), so the "
                           "cost weight is ignored.")
        return 0.0
    return lam


def _cost_text(view: RouterView, lam: float, chosen: int) -> str:
    if not view.has_costs:
        return ""
    cost = view.config.llm_cost[chosen]
    return (f"  \nCost weight lambda = {lam:g}: p = softmax((cosine + offset - lambda * c) / tau), c the LLMs' "
            f"costs scaled to [0, 1]; `{plots.short_name(view.llms[chosen])}` costs ${cost:.5f} per query.")


def _decision_text(view: RouterView, routing, tau: float, lam: float) -> str:
    """The Route tab's account of the routing of its one query: the choice and its margin, the
    novelty check (a router with the fallback) and the cost weight."""
    probs, sims = routing.probs[0], routing.similarities[0]
    rec = routing.novelty_record(0)
    novel = rec is not None and rec["novel"]
    text = _margin_text(view.llms, probs, sims, tau, view.config.llm_bias, view.config.calibrated_temperature,
                        label="The router's own pick" if novel else "Chosen LLM")
    if novel:
        text = (f"**Chosen LLM: `{rec['fallback_llm']}`, the LLM best on the training data**: this query is unlike "
                f"every training query (nearest cosine {rec['nearest_similarity']:.3f} < threshold "
                f"{rec['threshold']:.3f}), so the router's pick is not trusted on it.  \n" + text)
    elif rec is not None:
        text += (f"  \nNovelty check: the nearest training query is at cosine {rec['nearest_similarity']:.3f} "
                 f"(threshold {rec['threshold']:.3f}), so the router decides.")
    return text + _cost_text(view, lam, int(routing.choice[0]))


def _margin_text(llms, probs: np.ndarray, sims: np.ndarray, temperature: float,
                 offsets: tuple[float, ...] | None = None, calibrated: float | None = None,
                 label: str = "Chosen LLM") -> str:
    order = np.argsort(-probs)
    top, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
    margin = float(probs[top] - probs[second])
    off = "" if offsets is None else f", offset {offsets[top]:+.3f}"
    text = (f"**{label}: `{llms[top]}`** with probability {probs[top]:.1%} (cosine {sims[top]:.3f}{off}).  \n"
            f"Top-1/top-2 margin: **{margin:.1%}** over `{plots.short_name(llms[second])}` "
            f"({probs[second]:.1%}); tau = {temperature:g}.")
    if offsets is not None:
        text += "  \nThis router is calibrated: p = softmax((cosine + offset) / tau), one offset per LLM."
    if calibrated is not None and abs(temperature - calibrated) < 5e-3:
        text += (f"  \ntau = {calibrated:g} was fitted on the training data so that the chosen LLM's p is the "
                 "probability that it answers correctly: of the queries routed with p = 60%, about 60% were "
                 "answered correctly (the other LLMs' p only rank them).")
    elif calibrated is not None:
        text += f"  \nThe calibrated tau of this router is {calibrated:g}; at another tau p is not a probability to trust."
    return text


def recorded_scores(ctx: AppContext, view: RouterView, query: str, chosen: str) -> tuple[pd.DataFrame, str, tuple | None]:
    """``(table, verdict markdown, (entry, row) of the best match)`` for a query from a score set."""
    matches = ctx.data.lookup(query)
    if not matches:
        return pd.DataFrame(columns=["LLM", "recorded score", ""]), \
            "This query is not in the loaded score sets, so there are no recorded scores to compare with.", None
    same = [(e, r) for e, r in matches if set(e.set.llms) == set(view.llms)]
    entry, row = (same or matches)[0]
    s = entry.set
    scores = s.scores[row]
    best = float(scores.max())
    df = pd.DataFrame({
        "LLM": list(s.llms),
        "recorded score": [round(float(x), 4) for x in scores],
        "": ["← router's choice" if n == chosen else ("best" if x == best and best > 0 else "") for n, x in zip(s.llms, scores)],
    }).sort_values("recorded score", ascending=False, kind="stable")
    where = f"{entry.label} (`{entry.path.rsplit('/', 1)[-1]}`, row {s.rows[row]})"
    if chosen in s.llms:
        mine = float(scores[list(s.llms).index(chosen)])
        ok = "a good choice" if mine >= best else ("a correct LLM, not the best" if mine > 0 else "a miss")
        verdict = (f"This query is in {where}. The router's choice scored **{mine:.3f}**; the best recorded "
                   f"score is {best:.3f}: {ok}. Metric: {s.metric}.")
    else:
        verdict = (f"This query is in {where}, scored for other LLMs than this router's; the table shows "
                   "those models' recorded scores.")
    return df, verdict, (entry, row)


def live_backend(ctx: AppContext, llm: str) -> bool:
    """Whether the models config has a candidate that can answer as ``llm``."""
    gen = ctx.generation
    return gen is not None and gen.registry is not None and llm in gen.names


def answer_markdown(ctx: AppContext, match: tuple | None, chosen: str) -> str:
    if live_backend(ctx, chosen):
        return f"#### Answer of `{chosen}`\n\n*waiting for the generation backend…*"
    if match is not None:
        entry, row = match
        s = entry.set
        if s.responses is not None and chosen in s.llms:
            found = s.recorded(row, chosen)  # the one reader of recorded answers (the recorded backend's too)
            if found is not None:
                text, cost = found
                shown = text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + "\n…(truncated)"
                shown = shown.replace("~~~", "~ ~ ~")
                price = "" if cost is None else f", recorded price **${cost:.5f}**"
                return (f"#### Recorded answer of `{chosen}` (RouterBench, **recorded**, not generated live{price})\n\n"
                        f"~~~text\n{shown}\n~~~")
            return f"RouterBench has no recorded answer of `{chosen}` for this query."
        if s.responses is not None:
            return (f"RouterBench recorded answers for its own LLMs; this router chose `{chosen}`, which is "
                    "not one of them, and no generation backend serves it.")
    gen = ctx.generation
    if gen is None:
        return (f"**No generation backend is configured**, so `{chosen}` cannot answer live (start the app "
                "with `--models-config`, see README). Queries from the RouterBench sets show the chosen LLM's "
                "recorded answer.")
    if gen.registry is None:
        return f"**The models config cannot be used**, so `{chosen}` cannot answer: {html.escape(str(gen.error))}"
    return f"The models config `{gen.path}` has no candidate `{chosen}`, so it cannot answer live."


def neighbours_table(view: RouterView, emb: np.ndarray, k: int = 5) -> tuple[pd.DataFrame, str]:
    if view.map.emap is None or view.map.pool is None:
        return pd.DataFrame(), f"Nearest training queries: unavailable while the map is {view.map.state}."
    roles = np.asarray(view.map.pool.roles)
    among = roles == "train"
    what = "training"
    if not among.any():
        among, what = np.ones(len(roles), dtype=bool), "reference"
    idx, sims = view.map.emap.neighbours(emb, k=k, among=among)
    names = [plots.short_name(n) for n in view.llms]
    rows = []
    for i, c in zip(idx[0], sims[0]):
        sc = view.map.pool.scores[i]
        row = {"cosine": round(float(c), 3), "task": view.map.pool.tasks[i],
               "best": names[int(sc.argmax())] if sc.max() > 0 else "none"}
        row.update({n: round(float(x), 2) for n, x in zip(names, sc)})
        row["query"] = " ".join(view.map.pool.texts[i].split())[:160]
        rows.append(row)
    return pd.DataFrame(rows), (f"Why this route: the {len(rows)} nearest {what} queries by router embedding "
                                f"(cosine), with their recorded per-LLM scores.")


def build_route_tab(ctx: AppContext, session: gr.State) -> dict[str, Any]:
    """Build the Route tab; returns its components by name (for tests and wiring). A routed query
    becomes the session's last query (for the slider) and joins its routed queries (for the map)."""
    examples = ctx.data.examples()
    with gr.Row():
        with gr.Column(scale=3):
            query = gr.Textbox(label="Query", lines=5, max_lines=12, elem_id="query",
                               placeholder="Ask anything: a maths word problem, a coding task, a multiple-choice "
                                           "question (English or Chinese)…")
            with gr.Row():
                route_btn = gr.Button("Route", variant="primary", elem_id="route-btn")
                clear_btn = gr.ClearButton([query], value="Clear")
            temperature = gr.Slider(0.01, 5.0, value=ctx.routers.get(ctx.default_key).config.routing_temperature,
                                    step=0.01, elem_id="temperature",
                                    label="Temperature tau: the router's calibrated tau by default (re-renders without "
                                          "re-encoding; no choice depends on it)")
            cost_weight = gr.Slider(0.0, 3.0, value=0.0, step=0.05, elem_id="cost-weight",
                                    label="Cost weight lambda: trade quality for cost (routers with LLM costs; "
                                          "re-renders without re-encoding)")
            # Hidden while there are no data (they may be downloading: app.data_fetch fills it in).
            examples_box = gr.Examples(**examples_args(examples), inputs=[query], examples_per_page=12,
                                       visible=bool(examples))
        with gr.Column(scale=4):
            chosen_md = gr.Markdown("Route a query to see the router's choice.", elem_id="chosen")
            bar = gr.Plot(label="Routing probabilities", elem_id="route-plot")
    answer_md = gr.Markdown(elem_id="answer")
    verdict_md = gr.Markdown(elem_id="verdict")
    scores_df = gr.Dataframe(label="Recorded scores of this query", elem_id="scores", interactive=False,
                             max_height=320, visible=False)
    why_md = gr.Markdown(elem_id="why")
    neigh_df = gr.Dataframe(label="Nearest training queries", elem_id="neighbours", interactive=False,
                            max_height=360, wrap=True)
    stop_btn = gr.Button("Stop the answer", size="sm", elem_id="stop-answer", visible=ctx.generation is not None)
    with gr.Accordion("Raw result (JSON)", open=False):
        result_json = gr.JSON(elem_id="route-json")

    @guarded
    def do_route(q, tau, lam, sess: Session):
        t0 = time.perf_counter()
        q, notices = check_query(q)
        sess = sess or Session(ctx.default_key)
        view = ctx.routers.get(sess.router_key)
        note = unk_notice(view, q)
        if note:
            notices.append(note)
        emb = view.embed([q])
        lam = _cost_weight(view, lam, notices)
        routing = view.route_embeddings(emb, float(tau), lam)
        probs, sims = routing.probs[0], routing.similarities[0]
        chosen = routing.llms[0]
        offsets = view.config.llm_bias
        fig = plots.routing_bar(view.llms, probs, sims, int(routing.choice[0]), float(tau), offsets=offsets)
        df, verdict, match = recorded_scores(ctx, view, q, chosen)
        neigh, why = neighbours_table(view, emb)
        for n in notices:
            gr.Warning(n)
        md = _decision_text(view, routing, float(tau), lam)
        if notices:
            md += "\n\n" + "\n".join(f"> ⚠ {html.escape(n)}" for n in notices)
        result = {"router": view.name, "llm": chosen, "temperature": float(tau), "cost_weight": lam,
                  "probs": {n: float(p) for n, p in zip(view.llms, probs)},
                  "similarities": {n: float(x) for n, x in zip(view.llms, sims)},
                  **({"offsets": dict(zip(view.llms, offsets))} if offsets is not None else {}),
                  **({"novelty": routing.novelty_record(0)} if routing.nearest is not None else {}),
                  "margin": float(np.sort(probs)[-1] - (np.sort(probs)[-2] if len(probs) > 1 else 0.0)),
                  "query_chars": len(q), "notices": notices, "in_score_set": match is not None,
                  "seconds": round(time.perf_counter() - t0, 4)}
        sess = sess.with_routed(Routed(view.key, np.asarray(emb[0], dtype=np.float32), q, chosen))
        df = gr.update(value=df, visible=match is not None)
        return (md, fig, answer_markdown(ctx, match, chosen), verdict, df, why, neigh, result, sess)

    @guarded
    def retemper(tau, lam, sess: Session):
        last = sess.last if sess else None
        if last is None:
            raise gr.Error("Route a query first; the slider then re-renders its probabilities.", print_exception=False)
        view = ctx.routers.get(sess.router_key)
        if last.key != view.key:
            raise gr.Error("The router changed since this query was routed; press Route again.", print_exception=False)
        notices: list[str] = []
        lam = _cost_weight(view, lam, notices)
        for n in notices:
            gr.Warning(n)
        routing = view.route_embeddings(last.emb[None, :], float(tau), lam)
        probs, sims = routing.probs[0], routing.similarities[0]
        offsets = view.config.llm_bias
        fig = plots.routing_bar(view.llms, probs, sims, int(routing.choice[0]), float(tau), offsets=offsets)
        return _decision_text(view, routing, float(tau), lam), fig

    def answer(sess: Session):
        """Stream the chosen LLM's answer into the answer box (a no-op without a backend for it)."""
        last = sess.last if sess else None
        if last is None or not live_backend(ctx, last.llm):
            yield gr.skip()
            return
        from ..generation import stream_answer

        try:  # stream_answer sets its cancel event however it ends (Stop closes this generator)
            yield from stream_answer(ctx.generation, last.llm, last.query, threading.Event())
        except Exception as exc:  # noqa: BLE001 - the routing stands; the app stays up
            yield f"**The answer failed** ({type(exc).__name__}): {html.escape(str(exc))}"

    outs = [chosen_md, bar, answer_md, verdict_md, scores_df, why_md, neigh_df, result_json, session]
    ins = [query, temperature, cost_weight, session]
    routed_evt = route_btn.click(do_route, ins, outs, api_name="route", concurrency_limit=4, concurrency_id="route")
    answer_evt = routed_evt.success(answer, [session], [answer_md], api_name="answer", concurrency_limit=2,
                                    concurrency_id="answer", show_progress="minimal")
    submit_evt = query.submit(do_route, ins, outs, api_visibility="private", concurrency_id="route")
    answer_evt2 = submit_evt.success(answer, [session], [answer_md], api_visibility="private", concurrency_id="answer",
                                     show_progress="minimal")
    stop_btn.click(None, None, None, cancels=[answer_evt, answer_evt2], api_visibility="private")
    temperature.release(retemper, [temperature, cost_weight, session], [chosen_md, bar], api_name="retemper",
                        concurrency_id="route", show_progress="hidden")
    cost_weight.release(retemper, [temperature, cost_weight, session], [chosen_md, bar], api_name="recost",
                        concurrency_id="route", show_progress="hidden")
    return {"query": query, "route_btn": route_btn, "temperature": temperature, "cost_weight": cost_weight, "chosen": chosen_md, "bar": bar,
            "answer": answer_md, "stop": stop_btn, "scores": scores_df, "neighbours": neigh_df, "json": result_json,
            "clear": clear_btn, "examples": examples_box.dataset}


def examples_args(examples: list[tuple[str, str]]) -> dict[str, Any]:
    """The examples, their labels and the box's label: for ``gr.Examples`` and ``gr.Dataset``."""
    return {"examples": [[q] for q, _ in examples], "example_labels": [f"{lab}: {q[:60]}" for q, lab in examples],
            "label": f"Examples from the score sets ({len(examples)}: every task, English and Chinese)"}
