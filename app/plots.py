"""Pure figure functions: arrays / DataFrames in, plotly figures out. No Gradio, no state.

The figures take plotly's default template; the app sets it once (:func:`use_template`): naming a
template per figure costs about 20 ms of validation each time, more than the rest of a figure."""

from __future__ import annotations

import html
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39")
CHOSEN = "#d62728"
OTHER = "#9bb7d4"
TEMPLATE = "plotly_white"
LAYOUT = dict(margin=dict(l=10, r=10, t=48, b=10), font=dict(size=12))


def use_template(name: str = TEMPLATE) -> None:
    """Make ``name`` plotly's default template (for the figures of this process)."""
    import plotly.io as pio

    pio.templates.default = name


def short_name(llm: str) -> str:
    """``"meta-llama/Meta-Llama-3-8B"`` -> ``"Meta-Llama-3-8B"``."""
    return llm.rsplit("/", 1)[-1]


def shorten(text: str, n: int = 90) -> str:
    """One line of at most ``n`` characters, HTML-escaped (plotly hover labels are HTML)."""
    one = " ".join(text.split())
    return html.escape(one if len(one) <= n else one[: n - 1] + "…")


def routing_bar(llms: Sequence[str], probs: np.ndarray, sims: np.ndarray, chosen: int,
                temperature: float, title: str | None = None, offsets: Sequence[float] | None = None) -> go.Figure:
    """Routing probabilities over the LLMs, the chosen one highlighted, cosine (and the calibrated
    offset, when the router has them) on hover."""
    probs = np.asarray(probs, dtype=float)
    names = [short_name(n) for n in llms]
    colors = [CHOSEN if i == chosen else OTHER for i in range(len(llms))]
    off = np.zeros(len(llms)) if offsets is None else np.asarray(offsets, dtype=float)
    hover = "<b>%{hovertext}</b><br>probability %{y:.3f}<br>cosine %{customdata[0]:.3f}"
    if offsets is not None:
        hover += "<br>offset %{customdata[2]:+.3f}"
    fig = go.Figure(go.Bar(
        x=names, y=probs, marker_color=colors,
        customdata=np.stack([np.asarray(sims, float), np.arange(len(llms)), off], 1),
        text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False,
        hovertext=list(llms), hovertemplate=hover + "<extra></extra>",
    ))
    fig.update_layout(
        **LAYOUT, height=360, showlegend=False,
        title=title or f"Routing probabilities (tau = {temperature:g}); chosen: {short_name(llms[chosen])}",
        yaxis=dict(title="probability", range=[0, max(1e-9, float(probs.max())) * 1.18], tickformat=".0%"),
        xaxis=dict(tickangle=-25),
    )
    return fig


def map_figure(coords: np.ndarray, colour: Sequence[str], hover: Sequence[str], llm_coords: np.ndarray,
               llm_names: Sequence[str], routed: Sequence[Mapping] = (), *, colour_title: str = "task",
               title: str = "Router embedding map") -> go.Figure:
    """The 2-D map: one trace per colour group, the LLMs as labelled stars, routed queries as X.

    Args:
        coords: ``(n, 2)`` positions of the reference queries.
        colour: ``n`` group labels (the legend).
        hover: ``n`` hover texts (already HTML-safe).
        routed: dicts ``{"x", "y", "query", "llm"}`` of the queries a user routed.
    """
    fig = go.Figure()
    coords = np.asarray(coords, dtype=float)
    colour = np.asarray(list(colour), dtype=object)
    hover = np.asarray(list(hover), dtype=object)
    groups = list(dict.fromkeys(colour.tolist()))
    for j, g in enumerate(groups):
        m = colour == g
        fig.add_trace(go.Scattergl(
            x=coords[m, 0], y=coords[m, 1], mode="markers", name=str(g),
            marker=dict(size=5, color=PALETTE[j % len(PALETTE)], opacity=0.65),
            hovertext=hover[m], hovertemplate="%{hovertext}<extra>" + html.escape(str(g)) + "</extra>",
        ))
    llm_coords = np.asarray(llm_coords, dtype=float)
    fig.add_trace(go.Scatter(
        x=llm_coords[:, 0], y=llm_coords[:, 1], mode="markers+text", name="LLM embeddings",
        text=[short_name(n) for n in llm_names], textposition="top center",
        marker=dict(symbol="star", size=16, color="black", line=dict(color="white", width=1)),
        hovertext=list(llm_names), hovertemplate="LLM <b>%{hovertext}</b><extra></extra>",
    ))
    if routed:
        fig.add_trace(routed_trace(routed))
    fig.update_layout(**LAYOUT, height=600, title=title, legend=dict(title=colour_title, itemsizing="constant"),
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
    return fig


def routed_trace(routed: Sequence[Mapping]) -> go.Scatter:
    """The queries a user routed, as X markers: dicts ``{"x", "y", "query", "llm"}``."""
    return go.Scatter(
        x=[r["x"] for r in routed], y=[r["y"] for r in routed], mode="markers", name="your queries",
        marker=dict(symbol="x", size=14, color=CHOSEN, line=dict(color="black", width=1)),
        hovertext=[f"{shorten(r['query'])}<br>routed to <b>{html.escape(short_name(r['llm']))}</b>" for r in routed],
        hovertemplate="%{hovertext}<extra>your query</extra>",
    )


def message_figure(text: str, height: int = 300) -> go.Figure:
    """An empty figure that says ``text`` (a map still computing, no data)."""
    fig = go.Figure()
    fig.add_annotation(text=html.escape(text), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14))
    fig.update_layout(**LAYOUT, height=height, xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def loss_figure(history: Sequence[Mapping]) -> go.Figure:
    """Both loss terms (and the total) against the step."""
    fig = go.Figure()
    if history:
        steps = [h["step"] for h in history]
        for key, name in (("sample_llm", "sample-LLM"), ("sample_sample", "sample-sample"), ("total", "total")):
            fig.add_trace(go.Scatter(x=steps, y=[h.get(key) for h in history], mode="lines", name=name,
                                     line=dict(dash="dot" if key == "total" else "solid")))
    fig.update_layout(**LAYOUT, height=320, title="Training losses", xaxis_title="step", yaxis_title="loss")
    return fig


def accuracy_figure(history: Sequence[Mapping], labels: Mapping[str, str] | None = None) -> go.Figure:
    """Per-task accuracy (%) at each evaluation step: test split when there is one, else train."""
    evals = [h for h in history if any(k.startswith(("test/", "train/")) for k in h)]
    fig = go.Figure()
    if evals:
        split = "test" if any(k.startswith("test/") for k in evals[-1]) else "train"
        keys = [k for k in evals[-1] if k.startswith(split + "/") and not k.endswith(("_avg", "/avg"))]
        steps = [h["step"] for h in evals]
        for k in keys:
            task = k.split("/", 1)[1]
            fig.add_trace(go.Scatter(x=steps, y=[h.get(k) for h in evals], mode="lines+markers",
                                     name=(labels or {}).get(task, task)))
        fig.add_trace(go.Scatter(x=steps, y=[h.get(f"{split}/avg") for h in evals], mode="lines",
                                 name="average", line=dict(color="black", dash="dash")))
        title = f"Per-task accuracy ({split} split, %)"
    else:
        title = "Per-task accuracy (after the first evaluation)"
    fig.update_layout(**LAYOUT, height=320, title=title, xaxis_title="step", yaxis_title="accuracy (%)")
    return fig


def results_bars(table: pd.DataFrame, *, highlight: Sequence[str] = ()) -> go.Figure:
    """Grouped bars: one group per column (task or average), one bar per row (method)."""
    fig = go.Figure()
    cols = [str(c) for c in table.columns]
    for j, (label, row) in enumerate(table.iterrows()):
        lab = str(label)
        strong = lab in highlight
        fig.add_trace(go.Bar(
            x=cols, y=row.to_numpy(dtype=float), name=short_name(lab) if "/" in lab and " " not in lab else lab,
            marker=dict(color=CHOSEN if strong else PALETTE[j % len(PALETTE)],
                        line=dict(color="black", width=1.5 if strong else 0)),
            hovertemplate=html.escape(lab) + "<br>%{x}: %{y:.2f}%<extra></extra>",
        ))
    fig.update_layout(**LAYOUT, barmode="group", height=460, title="Accuracy per task (%)",
                      yaxis_title="accuracy (%)", legend=dict(font=dict(size=10)))
    return fig


def cost_curve_figure(curves: pd.DataFrame, llms: pd.DataFrame, *, title: str = "Quality against cost") -> go.Figure:
    """Quality against total cost: one line per method (``curves``: columns ``method``, ``total_cost``,
    ``quality``, a row per cost weight, in order) and each single LLM as a labelled point (``llms``:
    ``llm``, ``total_cost``, ``quality``)."""
    fig = go.Figure()
    for j, (method, pts) in enumerate(curves.groupby("method", sort=False)):
        fig.add_trace(go.Scatter(
            x=pts["total_cost"], y=pts["quality"], mode="lines+markers", name=str(method),
            line=dict(color=CHOSEN if j == 0 else PALETTE[j % len(PALETTE)], width=2.5 if j == 0 else 1.5),
            hovertemplate=html.escape(str(method)) + "<br>$%{x:.3f}: quality %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=llms["total_cost"], y=llms["quality"], mode="markers+text", name="single LLMs",
        text=[short_name(str(n)) for n in llms["llm"]], textposition="top center", textfont=dict(size=9),
        marker=dict(color="#555555", size=9, symbol="diamond"),
        hovertemplate="%{text}<br>$%{x:.3f}: quality %{y:.3f}<extra></extra>"))
    fig.update_layout(**LAYOUT, height=460, title=title, xaxis_title="total cost of the test queries ($)",
                      yaxis_title="quality (mean score of the chosen LLMs)", legend=dict(font=dict(size=10)))
    return fig
