"""The Explore tab: the router's embedding map (UMAP, cosine) with the LLM embeddings and the
queries this session routed."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import COLOUR_BY, guarded, map_figure_for
from .resources import AppContext


def map_info(ctx: AppContext, key: str | None) -> str:
    if not key:
        return "No router loaded."
    view = ctx.get_router(key)
    if view.emap is None:
        return f"Map of `{view.name}`: {view.map_state}."
    return (f"Map of `{view.name}`: {view.map_state}. Stars are the LLM embeddings; red crosses are the "
            "queries you routed in this session (placed by k-NN interpolation among the map's queries, "
            "by cosine similarity in the router's embedding space). Hover a point for its query and scores.")


def build_explore_tab(ctx: AppContext, router_key: gr.State, routed: gr.State, map_plot: gr.Plot,
                      colour_by: gr.Radio) -> dict[str, Any]:
    """Lay out the Explore tab. ``map_plot`` and ``colour_by`` are created unrendered by the caller
    (the Route tab updates the map too) and rendered here."""
    with gr.Row():
        colour_by.render()
        refresh = gr.Button("Refresh map", elem_id="map-refresh", scale=0)
    info = gr.Markdown(elem_id="map-info")
    map_plot.render()

    @guarded
    def explore(colour, key, routed_list):
        if not key:
            raise gr.Error("No router loaded: train or pick one first.", print_exception=False)
        view = ctx.get_router(key)
        ctx.ensure_map(view)
        return map_figure_for(view, colour, routed_list), map_info(ctx, key)

    ins, outs = [colour_by, router_key, routed], [map_plot, info]
    refresh.click(explore, ins, outs, api_name="explore", concurrency_id="route")
    colour_by.change(explore, ins, outs, api_visibility="private", concurrency_id="route")
    return {"refresh": refresh, "info": info, "explore_fn": explore, "inputs": ins, "outputs": outs}


def colour_radio() -> gr.Radio:
    return gr.Radio(list(COLOUR_BY), value="task", label="Colour by", elem_id="colour-by", render=False)
