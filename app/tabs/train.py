"""The Train tab: run the dual-contrastive trainer with live curves, cancel it, continue a cancelled
run from where it stopped (its resume state, :mod:`routerdc.train.resume`), and switch the session's
Route and Explore tabs to the new router."""

from __future__ import annotations

import dataclasses
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from routerdc.data import DataError, check_same_llms, task_label

from .. import plots
from ..common import clean_message, guarded, load_upload, status_markdown, strip_paths
from ..context import AppContext
from ..services.training import Busy
from ..state import Session

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Run:
    """A run of the tab: its recipe and data (kept to continue it after a cancel)."""

    cfg: Any  # TrainConfig (imported with torch, when a run starts)
    sets: list
    test_sets: list
    names: list[str]
    n_llms: int
    frozen: bool
    history: list = dataclasses.field(default_factory=list)


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", (name or "").strip()).strip("-.")
    return name[:40] or "router"


def shipped_choices(ctx: AppContext) -> tuple[list[tuple[str, str]], list[str]]:
    """The shipped training sets (choices) and the default selection: the paper's five."""
    train_entries = [e for e in ctx.data.entries if e.role == "train"]
    return ([(e.label, e.key) for e in train_entries],
            [e.key for e in train_entries if e.family == "routerdc"][:5])


def build_train_tab(ctx: AppContext, session: gr.State, router_picker: gr.Dropdown,
                    status_md: gr.Markdown) -> dict[str, Any]:
    choices, default = shipped_choices(ctx)
    with gr.Row():
        with gr.Column(scale=2):
            shipped = gr.CheckboxGroup(choices, label="Shipped training sets", value=default, elem_id="train-sets")
            uploads = gr.File(label="…or upload score files (.json, .jsonl, .csv; all with the same LLMs)",
                              file_count="multiple", file_types=[".json", ".jsonl", ".csv"], elem_id="train-upload")
            name = gr.Textbox(label="Name of the new router", value="my-router", elem_id="train-name")
        with gr.Column(scale=3):
            with gr.Row():
                frozen = gr.Checkbox(value=True, label="Frozen encoder (fast on CPU: train only the LLM embeddings "
                                     "and a projection)", elem_id="train-frozen")
                projection = gr.Checkbox(value=True, label="Projection layer")
            with gr.Row():
                steps = gr.Number(200, label="steps", precision=0, minimum=1, maximum=5000, elem_id="train-steps")
                batch = gr.Number(64, label="batch", precision=0, minimum=2, maximum=512, elem_id="train-batch")
                rows = gr.Number(500, label="rows per task", precision=0, minimum=4, maximum=5000, elem_id="train-rows")
                eval_every = gr.Number(50, label="evaluate every", precision=0, minimum=1, maximum=5000,
                                       elem_id="train-eval-every")
            with gr.Row():
                lr = gr.Number(5e-5, label="lr (encoder)", minimum=1e-7, maximum=1.0)
                head_lr = gr.Number(1e-2, label="lr (LLM embeddings)", minimum=1e-6, maximum=10.0)
                tau = gr.Number(1.0, label="tau", minimum=0.01, maximum=100.0)
                lam = gr.Number(1.0, label="lambda", minimum=0.0, maximum=100.0)
            with gr.Row():
                k_pos = gr.Number(3, label="K+", precision=0, minimum=1, maximum=50)
                k_neg = gr.Number(3, label="K-", precision=0, minimum=1, maximum=50)
                n_neg = gr.Number(3, label="H (negatives)", precision=0, minimum=1, maximum=50)
                n_clusters = gr.Number(5, label="n clusters", precision=0, minimum=1, maximum=100)
                recluster = gr.Checkbox(False, label="re-cluster")
            calibrate = gr.Checkbox(True, label="Calibrate after training: fit one routing offset per LLM on the "
                                    "training rows (not in the paper; see README)", elem_id="train-calibrate")
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        cancel = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
        cont = gr.Button("Continue", interactive=False, elem_id="train-continue")
        use = gr.Button("Use this router in Route & Explore", interactive=False, elem_id="train-use")
    progress_md = gr.Markdown("No training run yet.", elem_id="train-progress")
    with gr.Row():
        loss_plot = gr.Plot(label="Losses", elem_id="train-loss")
        acc_plot = gr.Plot(label="Per-task accuracy", elem_id="train-acc")
    run_id = gr.State(None)
    resumable = gr.State(None)  # the output folder of this session's last cancelled run, to continue
    trained_key = gr.State(None)

    def _gather(shipped_keys, files):
        sets, names = [], []
        for key in shipped_keys or []:
            e = ctx.data.by_key(key)
            sets.append(e.set)
            names.append(e.label)
        for f in files or []:
            got = load_upload(f)
            sets.extend(got)
            names.append(getattr(f, "orig_name", None) or Path(str(f)).name)
        if not sets:
            raise gr.Error("Choose at least one shipped training set or upload a score file.", print_exception=False)
        try:
            llms = check_same_llms(sets)
        except DataError as exc:
            raise gr.Error("The chosen sets do not share the same LLMs: " + clean_message(str(exc)),
                           print_exception=False) from None
        tasks = [s.task for s in sets]
        if len(set(tasks)) != len(tasks):
            raise gr.Error(f"Two chosen sets have the same task {sorted(t for t in tasks if tasks.count(t) > 1)}; "
                           "choose one of each.", print_exception=False)
        return sets, llms, names

    def _recipe(shipped_keys, files, name_, frozen_, proj_, steps_, batch_, rows_, eval_every_, lr_, head_lr_, tau_,
                lam_, k_pos_, k_neg_, n_neg_, n_clusters_, recluster_, calibrate_=True) -> Run:
        from routerdc.train.trainer import TrainConfig

        try:
            sets, llms, names = _gather(shipped_keys, files)
            nums = dict(steps=steps_, batch=batch_, rows=rows_, eval_every=eval_every_, lr=lr_, head_lr=head_lr_,
                        tau=tau_, lam=lam_, k_pos=k_pos_, k_neg=k_neg_, n_neg=n_neg_, n_clusters=n_clusters_)
            missing = [k for k, v in nums.items() if v is None]
            if missing:
                raise gr.Error(f"Fill in {', '.join(missing)}.", print_exception=False)
            if int(k_pos_) + int(k_neg_) > len(llms):
                raise gr.Error(f"K+ + K- = {int(k_pos_) + int(k_neg_)} exceeds the {len(llms)} LLMs of the data.",
                               print_exception=False)
            fams = {e.family for e in ctx.data.entries if e.key in (shipped_keys or [])}
            test_sets = [e.set for e in ctx.data.entries if e.role == "test" and e.family in fams
                         and set(e.set.llms) == set(llms)]
            out_dir = ctx.settings.runs_path / f"{_safe_name(name_)}-{time.strftime('%Y%m%d-%H%M%S')}"
            cfg = TrainConfig(
                output_dir=str(out_dir), samples_per_task=int(rows_), freeze_encoder=bool(frozen_),
                projection=bool(proj_), steps=int(steps_), batch_size=int(batch_), lr=float(lr_),
                head_lr=float(head_lr_), temperature=float(tau_), lam=float(lam_), k_pos=int(k_pos_),
                k_neg=int(k_neg_), n_neg=int(n_neg_), n_clusters=int(n_clusters_), recluster=bool(recluster_),
                eval_every=int(eval_every_), eval_max_per_task=ctx.settings.eval_max_per_task,
                id_tasks=tuple(t for t in (s.task for s in sets)), cache_dir=ctx.settings.cache_dir,
                device="cpu", length_window=4, calibrate=bool(calibrate_),
            )
        except gr.Error:
            raise
        except (ValueError, DataError, LookupError) as exc:
            raise gr.Error(clean_message(str(exc)), print_exception=False) from None
        return Run(cfg, sets, test_sets, names, len(llms), bool(frozen_))

    def _run(run: Run, resume: bool, progress: Any):
        """Run (or continue) ``run`` in a thread, yielding the outputs of Start and Continue."""
        from routerdc.train.trainer import Trainer

        cfg = run.cfg
        try:
            rid, cancel_evt = ctx.training.begin(cfg.steps, cfg.output_dir)
        except Busy as busy:
            t = busy.status
            raise gr.Error(f"Another training run is in progress (step {t.step}/{t.steps}); one run at a time. "
                           "Routing keeps working meanwhile; try again when it finishes.", print_exception=False) from None
        events: queue.Queue = queue.Queue()
        box: dict[str, Any] = {}
        history: list[dict[str, Any]] = list(run.history) if resume else []
        labels = {s.task: task_label(s.task) for s in run.sets + run.test_sets}
        locked = (gr.update(interactive=False), gr.update(interactive=False))  # Use, Continue

        def on_step(step, losses, metrics):
            events.put({"step": step, **losses, **(metrics or {})})

        def work():
            try:
                box["result"] = Trainer(cfg, train_sets=run.sets, test_sets=run.test_sets, on_step=on_step,
                                        cancel=cancel_evt, resume=resume).run()
            except Exception as exc:  # noqa: BLE001 - shown in the UI
                box["error"] = exc

        t0 = time.perf_counter()
        thread = threading.Thread(target=work, name="train", daemon=True)
        try:
            thread.start()
            first = (f"Continuing the cancelled run from step {history[-1]['step'] if history else 0}/{cfg.steps}…"
                     if resume else
                     f"Starting: {len(run.sets)} set(s) ({', '.join(run.names)}), {run.n_llms} LLMs, "
                     f"{'frozen' if run.frozen else 'fine-tuned'} encoder; embedding the queries first…")
            yield (first, plots.loss_figure(history), plots.accuracy_figure(history, labels), rid, None, *locked, None)
            last_yield = 0.0
            while thread.is_alive() or not events.empty():
                thread.join(POLL_SECONDS)
                changed = False
                while not events.empty():
                    history.append(events.get())
                    changed = True
                step = history[-1]["step"] if history else 0
                ctx.training.progress(rid, step)
                if step:
                    progress((step, cfg.steps), desc="training", unit="steps")
                if changed and time.perf_counter() - last_yield >= POLL_SECONDS:
                    last_yield = time.perf_counter()
                    h = history[-1]
                    msg = (f"Step {step}/{cfg.steps}: loss {h['total']:.4f} (sample-LLM {h['sample_llm']:.4f}, "
                           f"sample-sample {h['sample_sample']:.4f}); {time.perf_counter() - t0:.0f} s")
                    yield (msg, plots.loss_figure(history), plots.accuracy_figure(history, labels), rid, None, *locked,
                           None)
            if "error" in box:
                exc = box["error"]
                raise gr.Error(f"{'Continuing' if resume else 'Training'} failed: "
                               f"{clean_message(str(exc)) or type(exc).__name__}", print_exception=False)
            res = box["result"]
            msg, key = _summary(res, cfg, time.perf_counter() - t0)
            resumable = None
            if res.cancelled and res.resume_dir is not None:
                ctx.training.keep_resumable(cfg.output_dir, dataclasses.replace(run, history=list(res.history)))
                resumable = cfg.output_dir
                msg += " Press **Continue** to resume it."
            else:
                ctx.training.forget_resumable(cfg.output_dir)
            ctx.training.end(rid)  # the thread is done: free the slot before Continue can be pressed
            yield (msg, plots.loss_figure(history), plots.accuracy_figure(history, labels), None, key,
                   gr.update(interactive=key is not None), gr.update(interactive=resumable is not None), resumable)
        finally:
            cancel_evt.set()  # a closed generator (the user left) stops the thread too
            thread.join(timeout=60)
            ctx.training.end(rid)

    def _summary(res: Any, cfg: Any, secs: float) -> tuple[str, str | None]:
        if res.output_dir is None:
            return ((f"Cancelled at step {res.steps_done}/{cfg.steps} after {secs:.0f} s, before the first "
                     "evaluation: nothing was saved." if res.cancelled else "Finished, but nothing was saved."), None)
        key = ctx.routers.register(res.output_dir)
        summary = ", ".join(f"{k} {v:.1f}" for k, v in res.best_metrics.items() if k.endswith("avg"))
        cal = res.calibration
        calibrated = ("" if cal is None else f" Calibrated its routing offsets: training-set average "
                      f"{cal['train_avg_before']:.1f} -> {cal['train_avg_after']:.1f}.")
        return ((("Cancelled" if res.cancelled else "Finished") +
                 f" at step {res.steps_done}/{cfg.steps} in {secs:.0f} s. Saved the best router (step "
                 f"{res.best_step}; {summary}) to `{strip_paths(str(res.output_dir))}`.{calibrated} Press **Use this "
                 "router** to route and explore with it."), key)

    def train(*inputs, progress=gr.Progress()):
        yield from _run(_recipe(*inputs), False, progress)

    def resume(output_dir, progress=gr.Progress()):
        from routerdc.train.resume import has_state

        run = ctx.training.resumable(output_dir)
        if run is None or not has_state(output_dir):
            raise gr.Error("No cancelled run of yours to continue: Continue resumes the last run you cancelled, "
                           "from its last step.", print_exception=False)
        yield from _run(run, True, progress)

    def do_cancel(rid):
        if not ctx.training.cancel(rid):
            gr.Warning("No training run of yours is in progress.")
            return "No training run of yours is in progress."
        return ("Cancelling: the run stops after the current step and keeps its last saved checkpoint; "
                "**Continue** then resumes it from there…")

    @guarded
    def do_use(key, sess):
        if not key:
            raise gr.Error("Train a router first (or pick one in the router list).", print_exception=False)
        view = ctx.routers.get(key)
        ctx.maps.ensure(view)
        gr.Info(f"Route and Explore now use {view.name}. Its map is being computed in the background.")
        return ((sess or Session()).with_router(key), gr.update(choices=ctx.routers.choices(), value=key),
                status_markdown(ctx, key))

    ins = [shipped, uploads, name, frozen, projection, steps, batch, rows, eval_every, lr, head_lr, tau, lam,
           k_pos, k_neg, n_neg, n_clusters, recluster, calibrate]
    outs = [progress_md, loss_plot, acc_plot, run_id, trained_key, use, cont, resumable]
    start.click(train, ins, outs, api_name="train",
                concurrency_limit=2, concurrency_id="train")  # the 2nd gets the "one run at a time" message
    cont.click(resume, [resumable], outs, api_name="continue_training", concurrency_id="train")
    cancel.click(do_cancel, [run_id], [progress_md], api_name="cancel_training", queue=False)
    use_evt = use.click(do_use, [trained_key, session], [session, router_picker, status_md], api_name="use_trained",
              concurrency_id="route")
    return {"start": start, "cancel": cancel, "continue": cont, "use": use, "progress": progress_md, "loss": loss_plot,
            "acc": acc_plot, "trained_key": trained_key, "shipped": shipped, "use_event": use_evt}
