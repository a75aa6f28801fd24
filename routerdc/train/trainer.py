"""The dual-contrastive trainer.

Each step draws a batch (length-grouped, dynamically padded), computes
``L = L_sample-LLM + lambda * L_sample-sample`` and takes an AdamW step. Every ``eval_every``
steps it evaluates on the training and test sets and keeps the best router by the
training-set average (the paper's rule), that average after fitting the calibration offsets on
the same rows (``train-calibrated``), or a validation split, written atomically. With
``calibrate`` the saved router then gets per-LLM routing offsets fitted on all training rows
(:mod:`routerdc.train.calibration`). A cancel flag stops it between steps, leaving the last good
checkpoint intact (and uncalibrated).

At every evaluation step and when cancelled it also writes a resume state (the current weights, the
optimizer, the RNGs, the sampler's position, the best so far; :mod:`routerdc.train.resume`) to
``<output_dir>.resume``; ``Trainer(config, resume=True)`` continues from it exactly (the same losses
and weights as a run never stopped, on the same device). A run that finishes all its steps removes it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from routerdc.train.batching import Collator, length_grouped_batches, pretokenize
from routerdc.train.cluster import assign_clusters
from routerdc.data import ScoreSet, balance, load_many, resolve_file
from routerdc.inference.embed_cache import cached_embeddings
from routerdc.data.registry import TASKS
from routerdc.evaluate.evaluator import default_id_tasks, sample_rows, split_metrics
from routerdc.model.losses import router_loss
from routerdc.inference import Router
from routerdc.inference.features import cpu_features
from routerdc.model.router import RouterDC
from routerdc.train.config import TrainConfig
from routerdc.train import resume as rs

OnStep = Callable[[int, dict[str, float], "dict[str, float] | None"], None]
Cancel = Callable[[], bool] | threading.Event


def bf16_autocast(device_type: str, *, cuda: bool = True, cpu: bool = False, frozen: bool = False) -> bool:
    """Whether training autocasts to bf16: on CUDA when ``cuda``; on a CPU when ``cpu``, the
    encoder trains (``frozen`` False: a frozen encoder does not run in the steps, and bf16 would
    only round the keys' similarities) and the CPU has native bf16 (AMX-BF16 or AVX512-BF16).
    The master weights stay fp32 either way."""
    if device_type == "cuda":
        return cuda
    return device_type == "cpu" and cpu and not frozen and cpu_features().bf16


@dataclass
class TrainResult:
    """What a run did: where the best router is, its metrics, and the loss/metric history."""

    output_dir: Path | None
    best_step: int | None
    best_score: float | None
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_done: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    samples_per_second: float = 0.0
    calibration: dict[str, Any] | None = None
    kept_existing: float | None = None  # the existing router's score that this run did not beat
    resumed_from: int | None = None  # the step a resumed run continued after
    resume_dir: Path | None = None  # where the resume state was left (None: removed, or never written)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _is_cancelled(cancel: Cancel | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


def _split_val(sets: Sequence[ScoreSet], fraction: float, seed: int) -> tuple[list[ScoreSet], list[ScoreSet]]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    for s in sets:
        perm = rng.permutation(len(s))
        k = max(1, int(round(len(s) * fraction)))
        if len(s) - k < 1:
            raise ValueError(f"{s.source}: too few rows ({len(s)}) for a validation split")
        val.append(s.subset(np.sort(perm[:k])))
        train.append(s.subset(np.sort(perm[k:])))
    return train, val


class Trainer:
    """Trains a :class:`RouterDC` with the dual contrastive losses.

    Args:
        config: the recipe.
        train_sets / test_sets: already-loaded data (else read from ``config``'s files).
        on_step: called after every step as ``on_step(step, losses, metrics)``; ``metrics`` is a
            dict on evaluation steps and ``None`` otherwise.
        cancel: a ``threading.Event`` or a callable; when set, training stops after the current step.
        progress: show a tqdm bar.
        overwrite: replace the router in ``output_dir`` from the first evaluation on (and discard a
            resume state left there by an earlier run).
        resume: continue the run whose resume state is in ``<output_dir>.resume``
            (:class:`~routerdc.train.resume.ResumeError` when there is none, or it does not fit).
        keep_resume: keep the resume state also when the run finishes all its steps (to extend it).
    """

    def __init__(self, config: TrainConfig, *, train_sets: Sequence[ScoreSet] | None = None,
                 test_sets: Sequence[ScoreSet] | None = None, on_step: OnStep | None = None,
                 cancel: Cancel | None = None, progress: bool = False, overwrite: bool = False,
                 resume: bool = False, keep_resume: bool = False) -> None:
        self.config = config
        self.overwrite = overwrite
        self.resume = resume
        self.keep_resume = keep_resume
        self.on_step = on_step
        self.cancel = cancel
        self.progress = progress
        cfg = config
        if train_sets is None:
            if not cfg.train_files:
                raise ValueError("no training data: give train_files or train_sets")
            train_sets = load_many([resolve_file(f, cfg.data_dir) for f in cfg.train_files], missing=cfg.missing)
        if not train_sets:
            raise ValueError("no training data")
        self.llms = train_sets[0].llms
        train_sets = [s.align(self.llms) for s in train_sets]
        if test_sets is None:
            test_sets = [s for f in cfg.test_files
                         for s in load_many([resolve_file(f, cfg.data_dir)], missing=cfg.missing)]
        self.test_sets = [s.align(self.llms) for s in test_sets]
        self._full_sets = list(train_sets) + self.test_sets  # whole files, for the embedding cache
        if cfg.train_scores == "metric":
            train_sets = [s.metric_scores() for s in train_sets]
        if cfg.cost_rate:
            train_sets = [s.cost_adjusted(cfg.cost_rate) for s in train_sets]
        self.val_sets: list[ScoreSet] = []
        if cfg.select_by == "val":
            train_sets, self.val_sets = _split_val(train_sets, cfg.val_fraction, cfg.seed)
        self.train_sets = list(train_sets)  # unbalanced, for the training-set evaluation
        self.device = _device(cfg.device)

    # ------------------------------------------------------------------ set-up
    def _build(self) -> tuple[RouterDC, list[ScoreSet], np.ndarray]:
        cfg = self.config
        opts = cfg.router_options()
        if all(s.costs is not None for s in self.train_sets):  # e.g. RouterBench: route by cost later
            from routerdc.evaluate.cost_curve import mean_costs

            recorded = mean_costs(self.train_sets)
            opts["llm_cost"] = tuple(recorded[n] for n in self.llms)
        model = RouterDC.build(self.llms, encoder=cfg.encoder, seed=cfg.seed, **opts).to(self.device)
        sets = balance(self.train_sets, cfg.samples_per_task)
        if cfg.group_by == "task":
            groups = np.concatenate([np.full(len(s), i) for i, s in enumerate(sets)])
        else:
            if cfg.recluster or any(s.clusters is None for s in sets):
                sets = assign_clusters(sets, model, cfg.n_clusters, reduce=cfg.cluster_reduce, seed=cfg.seed)
            groups = np.concatenate([s.clusters for s in sets])  # type: ignore[misc]
        return model, sets, groups

    def _eval_sets(self) -> dict[str, list[ScoreSet]]:
        cfg = self.config
        out = {"train": sample_rows(self.train_sets, cfg.eval_max_per_task, cfg.seed)}
        if self.val_sets:
            out["val"] = sample_rows(self.val_sets, cfg.eval_max_per_task, cfg.seed)
        if self.test_sets:
            out["test"] = sample_rows(self.test_sets, cfg.eval_max_per_task, cfg.seed)
        return out

    # ------------------------------------------------------------------ evaluation
    def _id_tasks(self) -> tuple[str, ...]:
        return default_id_tasks({"id_tasks": self.config.id_tasks, "train_tasks": [s.task for s in self.train_sets]})

    def evaluate(self, model: RouterDC, eval_sets: dict[str, list[ScoreSet]],
                 cached: dict[str, list[np.ndarray]] | None = None) -> dict[str, float]:
        """Per-task accuracy (%) and averages for each evaluation split."""
        from routerdc.train.calibration import calibrate

        metrics: dict[str, float] = {}
        for split, sets in eval_sets.items():
            routings = []
            for i, s in enumerate(sets):
                if cached is not None:
                    with torch.no_grad():
                        emb = model.project(torch.as_tensor(cached[split][i], device=self.device))
                    routings.append(model.route_embeddings(emb))
                else:  # through the inference layer (torch fp32, token-budget batches)
                    routings.append(Router.from_model(model).route(s.queries))
            metrics.update(split_metrics(split, sets, [r.choice for r in routings], self._id_tasks()))
            if split == "train":  # what calibration would make of this step (select_by train-calibrated)
                metrics["train/avg_calibrated"] = calibrate(self.llms, [r.similarities for r in routings], sets).after
        return metrics

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        cfg = self.config
        t0 = time.perf_counter()
        select_key = {"val": "val/avg", "train": "train/avg", "train-calibrated": "train/avg_calibrated"}[cfg.select_by]
        out_dir = Path(cfg.output_dir)
        state_dir = rs.resume_dir(out_dir)
        state = rs.open_state(cfg) if self.resume else None  # before any work
        if state is None:
            rs.start_afresh(out_dir, overwrite=self.overwrite)
        existing = existing_score(out_dir, select_key, overwrite=self.overwrite) if state is None else state.baseline
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model, sets, groups_np = self._build()
        texts = [q for s in sets for q in s.queries]
        scores = torch.as_tensor(np.concatenate([s.scores for s in sets]), dtype=torch.float32)
        task_ids = torch.as_tensor(np.concatenate([np.full(len(s), i) for i, s in enumerate(sets)]))
        groups = torch.as_tensor(groups_np)
        eval_sets = self._eval_sets()
        data_id = rs.data_fingerprint(self.llms, [(s.task, s.queries, s.scores) for s in sets]
                                      + [("groups", (), groups_np)]
                                      + [(f"{k}/{s.task}", s.queries, s.scores)
                                         for k, v in eval_sets.items() for s in v])
        if state is not None and state.data != data_id:
            raise rs.ResumeError(f"{state_dir}: the training or evaluation data differ from those of the run to resume")

        frozen = cfg.freeze_encoder
        cached_train: torch.Tensor | None = None
        cached_eval: dict[str, list[np.ndarray]] | None = None
        if frozen:
            model.encoder.requires_grad_(False)
            # Embed whole files (cache-friendly: the same lists every run), then look texts up.
            table: dict[str, np.ndarray] = {}
            for full in self._full_sets:
                emb = cached_embeddings(model, full.queries, cache_dir=cfg.cache_dir)
                table.update(zip(full.queries, emb))
            missing = list(dict.fromkeys(t for t in texts if t not in table))
            if missing:
                table.update(zip(missing, model.embed_texts(missing, project=False)))
            cached_train = torch.as_tensor(np.stack([table[t] for t in texts]), device=self.device)
            cached_eval = {k: [np.stack([table[q] for q in s.queries]) for s in v] for k, v in eval_sets.items()}
            lengths = [1] * len(texts)
        else:
            ids = pretokenize(model.tokenizer, model.prepare_texts(texts), cfg.max_length)
            collate = Collator(model.tokenizer, ids)
            lengths = [len(x) for x in ids]

        head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
        groups_param = [{"params": head, "lr": cfg.effective_head_lr}]
        if not frozen:
            groups_param.append({"params": list(model.encoder.parameters()), "lr": cfg.lr})
        optim = torch.optim.AdamW(groups_param, weight_decay=cfg.weight_decay)
        batches = length_grouped_batches(lengths, cfg.batch_size, window=1 if frozen else cfg.length_window,
                                         generator=gen)
        autocast = bf16_autocast(self.device.type, cuda=cfg.bf16, cpu=cfg.cpu_bf16, frozen=frozen)
        result = TrainResult(output_dir=None, best_step=None, best_score=None, best_metrics={})
        first = 1
        if state is not None:
            rs.restore(state, state_dir, model=model, optimizer=optim, generator=gen, sampler=batches,
                       include_encoder=not frozen)
            result.best_step, result.best_score = state.best_step, state.best_score
            result.best_metrics = state.best_metrics
            result.history, result.steps_done, result.resumed_from = list(state.history), state.step, state.step
            result.output_dir = out_dir if state.best_step is not None else None
            first = state.step + 1

        def save_state(step: int) -> None:
            epoch, given = batches.position()
            rs.save_state(state_dir, rs.ResumeState(
                step=step, recipe=cfg.to_dict(), data=data_id,
                model=rs.model_weights(model, include_encoder=not frozen),
                optimizer=optim.state_dict(), rng=rs.rng_states(gen, self.device), sampler_epoch=epoch,
                sampler_given=given, best_step=result.best_step, best_score=result.best_score,
                best_metrics=result.best_metrics, baseline=existing, history=result.history))
            result.resume_dir = state_dir

        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            # No bar when the output is not a terminal (logs, CI); at most one update per 2 s.
            bar = tqdm(total=cfg.steps, initial=first - 1, desc="train", unit="step", disable=None, mininterval=2.0)
        model.train()
        seen = 0
        saved_at = first - 1 if state is not None else None  # the step of the resume state on disk
        for step in range(first, cfg.steps + 1):
            if _is_cancelled(self.cancel):
                result.cancelled = True
                break
            index = next(batches)
            optim.zero_grad(set_to_none=True)
            totals = {"total": 0.0, "sample_llm": 0.0, "sample_sample": 0.0}
            micro = max(1, len(index) // cfg.grad_accum)
            for start in range(0, len(index), micro):
                idx = index[start:start + micro]
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                    if frozen:
                        emb = model.project(cached_train[idx])  # type: ignore[index]
                        logits = model.logits(emb)
                    else:
                        batch = {k: v.to(self.device) for k, v in collate(idx).items()}
                        logits, emb = model(**batch)
                g = (task_ids if cfg.group_by == "task" else groups)[idx].to(self.device)
                loss = router_loss(logits.float(), scores[idx].to(self.device), emb.float(), g,
                                   k_pos=cfg.k_pos, k_neg=cfg.k_neg, neg_threshold=cfg.neg_threshold,
                                   lam=cfg.lam, n_neg=cfg.n_neg, ss_temperature=cfg.ss_temperature,
                                   tie_break=cfg.tie_break, generator=gen)
                (loss.total / cfg.grad_accum).backward()
                for k, v in (("total", loss.total), ("sample_llm", loss.sample_llm),
                             ("sample_sample", loss.sample_sample)):
                    totals[k] += float(v.detach()) / cfg.grad_accum
            optim.step()
            seen += len(index)
            if not all(math.isfinite(v) for v in totals.values()):
                raise FloatingPointError(f"non-finite loss at step {step}: {totals}")
            metrics = None
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                model.eval()
                metrics = self.evaluate(model, eval_sets, cached_eval)
                model.train()
            result.history.append({"step": step, **totals, **(metrics or {})})
            if metrics is not None:
                score = metrics[select_key]
                if (result.best_score is None or score > result.best_score) and (existing is None or score > existing):
                    result.best_score, result.best_step, result.best_metrics = score, step, metrics
                    self._save(model, out_dir, step, metrics, result)
                    result.output_dir = out_dir
            result.steps_done = step
            if metrics is not None and (step < cfg.steps or self.keep_resume):
                save_state(step)
                saved_at = step
            if bar is not None:
                bar.set_postfix(loss=f"{totals['total']:.3f}", **({"best": f"{result.best_score:.2f}"}
                                if result.best_score is not None else {}))
                bar.update(1)
            if self.on_step is not None:
                self.on_step(step, totals, metrics)
        if bar is not None:
            bar.close()
        if result.cancelled and saved_at != result.steps_done:
            save_state(result.steps_done)
        elif not result.cancelled and not self.keep_resume:
            rs.remove_state(state_dir)  # finished: nothing left to resume
            result.resume_dir = None
        result.samples_per_second = seen / max(time.perf_counter() - t0, 1e-9)  # training only
        if existing is not None and result.output_dir is None:
            result.kept_existing = existing
        if cfg.calibrate and result.output_dir is not None and not result.cancelled:
            from routerdc.train.calibration import calibrate_checkpoint

            del model, optim  # the saved best router is reloaded; free the training copy first
            result.calibration = calibrate_checkpoint(result.output_dir, self.train_sets, cache_dir=cfg.cache_dir,
                                                      device=self.device,
                                                      novelty=cfg.novelty_quantile or None).to_dict()
        result.seconds = time.perf_counter() - t0
        return result

    def _save(self, model: RouterDC, out_dir: Path, step: int, metrics: dict[str, float],
              result: TrainResult) -> None:
        cfg = self.config
        dtype = getattr(torch, cfg.save_dtype) if cfg.save_dtype else None
        recipe = {**cfg.to_dict(), "train_tasks": [s.task for s in self.train_sets]}
        model.save_pretrained(
            out_dir, include_encoder=not cfg.freeze_encoder, recipe=recipe,
            metrics={"step": step, **metrics}, dtype=dtype, max_shard_size=cfg.max_shard_size,
            extra_json={"history.json": result.history},
        )


def existing_score(out_dir: Path, select_key: str, *, overwrite: bool = False) -> float | None:
    """The selection score of the router already in ``out_dir`` (a new run must beat it), or None
    (no router there, or ``overwrite``). A folder that holds something else, or a router without
    that score, is refused unless ``overwrite``: a new run never destroys it silently."""
    from routerdc.checkpoint import CheckpointError, read_config

    if overwrite or not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a router folder; choose another output folder")
    if not (out_dir / "config.json").exists():
        if any(out_dir.iterdir()):
            raise ValueError(f"{out_dir} is not empty and holds no router; choose another output folder or pass "
                             "--overwrite to replace it")
        return None
    try:
        score = read_config(out_dir).get("metrics", {}).get(select_key)
    except CheckpointError as exc:
        raise ValueError(f"{exc}; pass --overwrite to replace it") from None
    if not isinstance(score, (int, float)):
        raise ValueError(f"{out_dir} holds a router without a {select_key!r} score, so a new run cannot tell whether "
                         "it is better: choose another output folder or pass --overwrite to replace it")
    return float(score)


def train(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Run :class:`Trainer` with ``config``; keyword arguments go to the Trainer."""
    return Trainer(config, **kwargs).run()


__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "TASKS"]
