"""Build and launch the app: ``create_app(settings)`` -> ``gr.Blocks``; ``main(argv)`` for app.py."""

from __future__ import annotations

import logging
import sys
import time
from typing import Sequence

import gradio as gr

from . import plots, session_memory
from routerdc.limits import BOUNDS

from .common import guarded, status_markdown
from .context import AppContext
from .services.routers import Preload
from .settings import ROOT, Settings, parse_args
from .state import Session
from .tabs.evaluate import build_evaluate_tab, sets_update
from .tabs.explore import build_explore_tab
from .tabs.route import build_route_tab, examples_args
from .tabs.train import build_train_tab, shipped_choices

log = logging.getLogger("routerdc.app")

INTRO = """# RouterDC: route each query to the best LLM
A text encoder E maps the query to a vector, each candidate LLM t has a learned embedding k_t, and the
router answers with the LLM of highest `softmax_t(cos(E(x), k_t) / tau)` (Chen et al., NeurIPS 2024).
**Route** a query, **Explore** the router's embedding space, **Train** your own router, **Evaluate** it
per task."""

CSS = """
#chosen {font-size: 1.05em}
#status {font-size: 0.9em}
footer {visibility: hidden}
"""


def create_app(settings: Settings | None = None, ctx: AppContext | None = None) -> gr.Blocks:
    """The Gradio app over ``ctx`` (created from ``settings`` when not given)."""
    settings = settings or Settings.from_env()
    ctx = ctx or AppContext.create(settings)
    session_memory.install()
    plots.use_template()
    with gr.Blocks(title="RouterDC demo",
                   delete_cache=(BOUNDS.delete_cache_every_s, BOUNDS.delete_cache_age_s)) as demo:
        gr.Markdown(INTRO)
        session = gr.State(Session(ctx.default_key))  # app.state.Session: this session's router and routed queries
        with gr.Row():
            picker = gr.Dropdown(ctx.routers.choices(), value=ctx.default_key, label="Router", scale=3,
                                 elem_id="router-picker", interactive=True)
            refresh_status = gr.Button("Refresh status", scale=0, size="sm", elem_id="status-refresh")
        with gr.Accordion("Status", open=True):
            status = gr.Markdown(status_markdown(ctx, ctx.default_key), elem_id="status")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Route", id="route", elem_id="tab-route"):
                route = build_route_tab(ctx, session)
            with gr.Tab("Explore", id="explore", elem_id="tab-explore") as explore_tab:
                explore = build_explore_tab(ctx, session)
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                train = build_train_tab(ctx, session, picker, status)
            with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate"):
                ev = build_evaluate_tab(ctx, session)

        explore_tab.select(explore["explore_fn"], explore["inputs"], explore["outputs"], api_visibility="private",
                           concurrency_id="route")

        @guarded
        def pick(key, sess):
            view = ctx.routers.get(key)
            ctx.maps.ensure(view)
            return ((sess or Session()).with_router(key), status_markdown(ctx, key), sets_update(ctx, key),
                    view.config.routing_temperature)

        def key_of(sess):
            return sess.router_key if sess else None

        # A router change also resets the Route tab's temperature to that router's calibrated tau.
        picker.input(pick, [picker, session], [session, status, ev["sets"], route["temperature"]],
                     api_name="pick_router", concurrency_id="route")
        train["use_event"].then(lambda sess: (sets_update(ctx, key_of(sess)),
                                              ctx.routers.get(key_of(sess)).config.routing_temperature),
                                [session], [ev["sets"], route["temperature"]], api_visibility="private")
        refresh_status.click(lambda sess: status_markdown(ctx, key_of(sess)), [session], [status], api_name="status",
                             queue=False)
        demo.load(lambda sess: status_markdown(ctx, key_of(sess)), [session], [status], api_visibility="private",
                  queue=False)
        if ctx.fetch is not None:
            _poll_data_fetch(ctx, session, status, train["shipped"], ev["sets"], route["examples"])
    demo.state_session_capacity = BOUNDS.state_session_capacity  # also when mounted (launch() sets it too)
    demo.ctx = ctx  # type: ignore[attr-defined]  # for tests and benchmarks
    return demo


def _poll_data_fetch(ctx: AppContext, session: gr.State, status: gr.Markdown, train_sets, eval_sets,
                     examples: gr.Dataset) -> None:
    """While the score data download (app.data_fetch), each page's status follows it every 2 s;
    once it has finished, the page's data choices and examples are filled in and the polling stops."""
    timer = gr.Timer(2.0)

    def tick(sess):
        key = sess.router_key if sess else None
        if not ctx.fetch.finished.is_set():
            return status_markdown(ctx, key), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=True)
        choices, default = shipped_choices(ctx)
        ex = examples_args(ctx.data.examples())
        return (status_markdown(ctx, key), gr.update(choices=choices, value=default), sets_update(ctx, key),
                gr.Dataset(samples=ex["examples"], sample_labels=ex["example_labels"], label=ex["label"],
                           visible=bool(ex["examples"])), gr.Timer(active=False))

    timer.tick(tick, [session], [status, train_sets, eval_sets, examples, timer], api_visibility="private",
               queue=False)


def launch_kwargs(settings: Settings) -> dict:
    """Server settings: upload limits, no files served beyond the app's assets, no SSR."""
    s = settings
    blocked = [str(p) for p in {ROOT / "runs", ROOT / "checkpoints", ROOT / "routerdc", ROOT / ".venv"}]
    if s.data_dir:
        blocked.append(str(s.data_dir))
    return dict(server_name=s.host, server_port=s.port, max_file_size=s.max_file_size,
                state_session_capacity=BOUNDS.state_session_capacity,
                allowed_paths=[str(ROOT / "assets")], blocked_paths=blocked, show_error=False, ssr_mode=False,
                footer_links=["api"], theme=gr.themes.Soft(), css=CSS)


def routed_api(ctx: AppContext):
    """The routed OpenAI-compatible API over the default router and the app's backends, or None
    (no models config, no router, or names that do not match: said in the status area)."""
    gen = ctx.generation
    if gen is None or gen.registry is None or not ctx.default_key:
        return None
    view = ctx.routers.get(ctx.default_key)
    why = gen.mismatch(view.llms)
    if why:
        ctx.notes.append(f"The routed API is not mounted: {why}")
        return None
    from routerdc.serving import create_api
    from routerdc.serving.auth import BindRefused, check_bind

    s = ctx.settings
    try:
        line = check_bind(s.host, s.api_keys, s.allow_unauthenticated)
    except BindRefused as exc:
        ctx.notes.append(f"The routed API is not mounted: {exc}")
        log.warning("%s", exc)
        return None
    log.info("%s", line)
    ctx.notes.append(line[0].upper() + line[1:] + ".")
    from routerdc.serving.auth import is_loopback

    return create_api(view.engine, gen.registry, check=False, api_keys=s.api_keys,
                      loopback_hosts=not s.api_keys and is_loopback(s.host))


def _serve(api, demo: gr.Blocks, settings: Settings, *, prevent_thread_lock: bool = False,
           quiet: bool = False, **kwargs) -> None:
    """Serve the Gradio app mounted on the routed API's FastAPI app, under uvicorn."""
    import uvicorn

    opts = launch_kwargs(settings)
    host, port = opts.pop("server_name"), opts.pop("server_port")
    demo.state_session_capacity = opts.pop("state_session_capacity")
    opts.update({k: v for k, v in kwargs.items() if k in opts})
    gr.mount_gradio_app(api, demo, path="/", server_name=host, server_port=port, **opts)
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning" if quiet else "info"))
    demo.uvicorn_server = server  # type: ignore[attr-defined]  # for close()
    close = demo.close

    def close_all(*a, **k):
        server.should_exit = True
        return close(*a, **k)

    demo.close = close_all  # type: ignore[method-assign]
    if not prevent_thread_lock:
        server.run()
        return
    import threading

    threading.Thread(target=server.run, name="uvicorn", daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the app server did not start on {host}:{port}")
    log.info("app and routed API on http://%s:%d (UI at /, API at /v1)", host, port)


def launch(settings: Settings, ctx: AppContext | None = None, **kwargs) -> gr.Blocks:
    """Launch the app; with a usable models config, the routed API is served beside it (``/v1/...``)."""
    demo = create_app(settings, ctx)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    api = routed_api(demo.ctx)  # type: ignore[attr-defined]
    if api is None:
        demo.launch(**{**launch_kwargs(settings), **kwargs})
    else:
        _serve(api, demo, settings, **kwargs)
    return demo


def main(argv: Sequence[str] | None = None, settings: Settings | None = None, args=None,
         preload: Preload | None = None, t0: float | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings is None:
        settings, args = parse_args(argv)
    t0 = t0 or time.perf_counter()
    ctx = AppContext.create(settings, background_map=not args.prepare, preload=preload)
    if ctx.generation is not None:
        import atexit

        atexit.register(ctx.generation.close)  # stops the vLLM servers launched by the app
    log.info("loaded in %.1f s: router %s", time.perf_counter() - t0, ctx.default_key)
    if args.prepare:
        if ctx.fetch is not None and not ctx.fetch.wait():
            print(f"the score data download failed: {ctx.fetch.detail}", file=sys.stderr)
        if not ctx.default_key:
            print("no router to prepare a map for: " + " ".join(ctx.notes), file=sys.stderr)
            return 2
        view = ctx.routers.get(ctx.default_key)
        ctx.maps.ensure(view, background=False)
        print(f"{view.name}: map {view.map.state}; routing on {view.engine_name}")
        if args.map.ship and view.map.emap is not None:
            print(f"{view.name}: map shipped as {view.map.ship(ctx.data)}")
        return 0 if view.map.emap is not None else 1
    launch(settings, ctx)
    return 0
