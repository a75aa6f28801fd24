"""The Explore tab: the router's embedding map (UMAP, cosine) with the LLM embeddings and the
queries this session routed. The map figure has one update path: this tab's ``explore`` handler
(on selecting the tab, refreshing, or changing the colouring); routing a query only records it in
the session."""

from __future__ import annotations

import html
from typing import Any, Sequence

import gradio as gr
import numpy as np
import orjson
from gradio.components.plot import PlotData

from .. import plots
from ..common import guarded
from ..context import AppContext
from ..services.routers import RouterView
from ..state import Routed, Session

COLOUR_BY = ("task", "cluster", "routed LLM", "best LLM")


def map_info(ctx: AppContext, key: str | None) -> str:
    if not key:
        return "No router loaded."
    view = ctx.routers.get(key)
    if view.map.emap is None:
        return f"Map of `{view.name}`: {view.map.state}."
    return (f"Map of `{view.name}`: {view.map.state}. Stars are the LLM embeddings; red crosses are the "
            "queries you routed in this session (placed by k-NN interpolation among the map's queries, "
            "by cosine similarity in the router's embedding space). Hover a point for its query and scores.")


def build_explore_tab(ctx: AppContext, session: gr.State) -> dict[str, Any]:
    """Lay out the Explore tab and wire its one map handler (``explore_fn``, also run when the tab is
    selected: see ``app.main``)."""
    with gr.Row():
        colour_by = gr.Radio(list(COLOUR_BY), value="task", label="Colour by", elem_id="colour-by")
        refresh = gr.Button("Refresh map", elem_id="map-refresh", scale=0)
    info = gr.Markdown(elem_id="map-info")
    map_plot = gr.Plot(label="Embedding map", elem_id="map-plot")

    @guarded
    def explore(colour, sess: Session):
        key = sess.router_key if sess else None
        if not key:
            raise gr.Error("No router loaded: train or pick one first.", print_exception=False)
        view = ctx.routers.get(key)
        ctx.maps.ensure(view)
        return map_figure_for(view, colour, sess.routed_by(view.key)), map_info(ctx, key)

    ins, outs = [colour_by, session], [map_plot, info]
    refresh.click(explore, ins, outs, api_name="explore", concurrency_id="route")
    colour_by.change(explore, ins, outs, api_visibility="private", concurrency_id="route")
    return {"refresh": refresh, "info": info, "map": map_plot, "colour": colour_by, "explore_fn": explore,
            "inputs": ins, "outputs": outs}


def _hover(view: RouterView) -> list[str]:
    if view.map.hover is not None:
        return view.map.hover
    pool = view.map.pool
    names = [plots.short_name(n) for n in view.llms]
    out = []
    for i, q in enumerate(pool.texts):
        sc = pool.scores[i]
        routed = names[int(view.map.routed[i])]
        scores = " · ".join(f"{names[j]} {sc[j]:.2f}" for j in np.argsort(-sc)[:4])
        out.append(f"<b>{html.escape(pool.tasks[i])}</b> ({pool.roles[i]})<br>{plots.shorten(q, 80)}"
                   f"<br>router → {html.escape(routed)}<br>{html.escape(scores)}")
    view.map.hover = out
    return out


def colour_labels(view: RouterView, colour_by: str) -> list[str]:
    pool = view.map.pool
    names = [plots.short_name(n) for n in view.llms]
    if colour_by == "cluster":
        return [f"cluster {c}" if c >= 0 else "no cluster id (test set)" for c in pool.clusters]
    if colour_by == "routed LLM":
        return [names[int(c)] for c in view.map.routed]
    if colour_by == "best LLM":
        best = pool.scores.argmax(axis=1)
        return [names[int(b)] if pool.scores[i, b] > 0 else "no LLM scored > 0" for i, b in enumerate(best)]
    return list(pool.tasks)


def map_figure_for(view: RouterView | None, colour_by: str, routed: Sequence[Routed]):
    """The Explore map for a session: the router's map plus the session's routed queries.

    The map of thousands of points is built and serialised once per router and colouring; each
    call only adds the session's routed queries to that JSON (a new go.Figure of the whole map
    took about 100 ms per routed query)."""
    if view is None:
        return plots.message_figure("No router loaded.")
    if view.map.emap is None:
        return plots.message_figure(f"The map is {view.map.state}. Press 'Refresh map' in a moment.")
    colour_by = colour_by if colour_by in COLOUR_BY else "task"
    base = _base_map_json(view, colour_by)
    mine = [r for r in routed or () if r.key == view.key]
    data = base["data"]
    if mine:
        xy = view.map.emap.place(np.stack([r.emb for r in mine]).astype(np.float32))
        pts = [{"x": float(x), "y": float(y), "query": r.query, "llm": r.llm} for r, (x, y) in zip(mine, xy)]
        data = [*data, orjson.loads(plots.routed_trace(pts).to_json())]
    return PlotData(type="plotly", plot=orjson.dumps({"data": data, "layout": base["layout"]}).decode())


def _base_map_json(view: RouterView, colour_by: str) -> dict:
    """The map without the session's points, as plotly JSON, built once per router and colouring
    (the map is set once per view, so the colouring is the whole key)."""
    base = view.map.figures.get(colour_by)
    if base is None:
        fig = plots.map_figure(view.map.emap.coords, colour_labels(view, colour_by), _hover(view), view.map.emap.llm_coords,
                               view.llms, colour_title=colour_by,
                               title=f"{view.name}: {view.map.emap.method.upper()} (cosine) of {len(view.map.emap)} "
                                     f"queries and {len(view.llms)} LLM embeddings")
        base = view.map.figures[colour_by] = orjson.loads(fig.to_json())
    return base

