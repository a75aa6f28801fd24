"""The training recipe, as a frozen dataclass saved with the trained router (the ``recipe`` of its
``config.json``, :class:`routerdc.checkpoint.RouterMeta`), from which ``train --config`` retrains it.
Each field's help text (the ``train`` command's ``--help``) is in its metadata."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from routerdc.model.encoder import DEFAULT_ENCODER


def _opt(default: Any, help: str) -> Any:  # noqa: A002 - argparse's word
    """A field with its ``--help`` text in its metadata."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults follow the paper's recipe.

    Data:
        train_files / test_files: score files (absolute, relative, or relative to the data dir).
        data_dir: the data directory (default ``$ROUTERDC_DATA`` or ``../shared/data``).
        samples_per_task: each training task truncated or repeated to this many rows (0: as is).
        missing: rows with absent scores: ``error``, ``drop`` or ``zero``.
        cost_rate: train on ``score - cost_rate * cost`` (RouterBench); 0 ignores costs.
        train_scores: ``raw`` (the paper: the files' scores; for multiple choice, the probability
            of the correct answer, 0 when wrong) or ``metric`` (the test metric's view: multiple
            choice binarised to correct/wrong, pass rates as is).
        group_by: groups of the sample-sample loss: ``cluster`` ids or ``task`` ids.
        n_clusters / cluster_reduce: k-means used when the files carry no cluster ids (or
            ``recluster``).
    Model: encoder, pooling, similarity, temperature (tau), max_length, projection,
        normalization (text normalisation: none, anyascii, translit-unk).
    Losses: k_pos, k_neg, neg_threshold, tie_break (how equal scores are ordered when picking
    positives and negatives: "index" or "random"), lam (lambda), n_neg (H), ss_temperature.
    Optimiser: lr, weight_decay, batch_size, grad_accum (micro-batches per step), steps.
    Speed: length_window (1 = random batches), bf16 (autocast on CUDA), cpu_bf16 (bf16 autocast of the
        encoder on a CPU with AMX-BF16 or AVX512-BF16, fp32 master weights; on by default, since it
        measured 1.6x fp32's samples/s at batch 64 with matching losses, ``bench/train_bf16.py``), freeze_encoder (cache the
        embeddings once, on disk under ``cache_dir`` (default ``$ROUTERDC_CACHE`` or
        ``~/.cache/routerdc``), and train only the LLM embeddings and the optional projection;
        their learning rate is ``head_lr``, default 1e-2 when frozen, else ``lr``).
    Evaluation: eval_every steps (0: only at the end), eval_max_per_task caps each eval set
        (0: all rows), select_by ``train`` (the paper's rule: best training-set average) or
        ``val`` (a held-out ``val_fraction`` of the training rows).
    Calibration: calibrate fits one routing offset per LLM on all training rows after the run,
        maximising the training-set average (:mod:`routerdc.train.calibration`); off in the paper.
    """

    train_files: tuple[str, ...] = _opt((),
                "training score files (.json/.jsonl/.csv); default: the paper's 5 in-distribution sets")
    test_files: tuple[str, ...] = _opt((),
                "test score files evaluated every --eval-every steps; default: the paper's 8 test sets")
    data_dir: str | None = None
    output_dir: str = _opt("runs/router", 'where the best router is written (atomically)')
    samples_per_task: int = _opt(1000, 'truncate or repeat each training task to N rows (0: keep as is)')
    missing: str = _opt("error", 'rows with absent scores: error, drop or zero')
    cost_rate: float = _opt(0.0, 'train on score - cost_rate * cost (RouterBench files carry costs)')
    train_scores: str = _opt("raw",
                "scores the losses see: raw (the paper: the files' scores; multiple choice as the probability of the "
                'right answer) or metric (as the test metric counts them: multiple choice as correct/wrong, pass '
                'rates as is)')
    group_by: str = _opt("cluster", 'groups of the sample-sample loss: cluster ids or task ids')
    n_clusters: int = _opt(5, 'k-means clusters when the data carry no cluster ids (or with --recluster)')
    cluster_reduce: str = _opt("none", "reduction before k-means: none, pca or tsne (the paper's)")
    recluster: bool = _opt(False, 'recompute cluster ids even when the files carry them')
    id_tasks: tuple[str, ...] | None = _opt(None, 'in-distribution task names (default: the training tasks)')

    encoder: str = _opt(DEFAULT_ENCODER,
                'encoder: all-MiniLM-L6-v2 (embedded), a hub id such as microsoft/mdeberta-v3-base, or a folder')
    pooling: str = _opt("cls", "cls (first token, the paper's) or mean")
    similarity: str = _opt("cos", "cos (the paper's) or dot")
    temperature: float = _opt(1.0, 'tau in softmax(sim / tau)')
    max_length: int = _opt(512, 'max tokens per query; longer queries are truncated from the left')
    projection: bool = _opt(False, 'add a d x d linear projection after pooling')
    normalization: str = _opt("none",
                'text normalisation: none, anyascii (all text to ASCII; Chinese to pinyin) or translit-unk (only '
                'characters the tokenizer lacks)')

    k_pos: int = _opt(3, 'K+: top-scoring LLMs pulled towards the query')
    k_neg: int = _opt(3, 'K-: bottom-scoring LLMs pushed away')
    neg_threshold: float = _opt(0.5, 'ignore negatives scoring above this')
    tie_break: str = _opt("index",
                'order of LLMs with equal scores when picking positives/negatives: index (column order, biased '
                'towards the first columns) or random (a fresh permutation per query)')
    lam: float = _opt(1.0, 'lambda, weight of the sample-sample loss (0 disables it)')
    n_neg: int = _opt(3, 'H: out-group negatives per query in the sample-sample loss')
    ss_temperature: float = _opt(1.0, 'temperature of the sample-sample loss')

    lr: float = _opt(5e-5, 'AdamW learning rate of the encoder')
    head_lr: float | None = _opt(None,
                'learning rate of the LLM embeddings (default: --lr, or 1e-2 with --freeze-encoder)')
    weight_decay: float = _opt(0.01, 'AdamW weight decay')
    batch_size: int = _opt(64, 'queries per step')
    grad_accum: int = _opt(1, 'micro-batches per step, for small memory (the sample-sample loss is in-micro-batch)')
    steps: int = _opt(1000, 'optimiser steps')

    length_window: int = _opt(4, 'group queries of similar length within windows of N batches (1: random batches)')
    bf16: bool = _opt(True, 'bf16 autocast on CUDA')
    cpu_bf16: bool = _opt(True,
                'bf16 autocast of the encoder on a CPU with AMX-BF16 or AVX512-BF16 (fp32 master weights; '
                'ignored on other CPUs and with --freeze-encoder)')
    freeze_encoder: bool = _opt(False,
                "cache the encoder's embeddings once and train only the LLM embeddings (+ projection)")

    eval_every: int = _opt(100, 'evaluate every N steps (0: only at the end)')
    eval_max_per_task: int = _opt(0, 'evaluate on at most N rows per task (0: all)')
    select_by: str = _opt("train", "keep the best router by the train average (the paper's rule), by the train "
                                   "average after calibration (train-calibrated) or by a val split")
    val_fraction: float = _opt(0.1, 'held-out fraction of each training task with --select-by val')
    calibrate: bool = _opt(False,
                'after training, fit one routing offset per LLM on all training rows (maximising the training-set '
                'average; see `calibrate`)')
    novelty_quantile: float = _opt(0.05,
                'with calibrate, also fit the novelty fallback: a query less similar to every training query than '
                'this quantile of the training queries\' own nearest-neighbour similarities goes to the LLM best on '
                'the training data (0: no fallback; see routerdc.novelty)')

    seed: int = _opt(0, 'random seed')
    device: str = _opt("auto", 'auto, cpu, cuda, cuda:1, ...')
    cache_dir: str | None = _opt(None,
                'where frozen-encoder embeddings are cached (default: $ROUTERDC_CACHE or ~/.cache/routerdc)')
    save_dtype: str | None = _opt(None, 'save weights as float16 / bfloat16 / float32')
    max_shard_size: str = _opt("5GB", 'split saved weights into shards of at most this size (e.g. 15MB)')
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_files", tuple(str(f) for f in self.train_files))
        object.__setattr__(self, "test_files", tuple(str(f) for f in self.test_files))
        if self.id_tasks is not None:
            object.__setattr__(self, "id_tasks", tuple(self.id_tasks))
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.grad_accum >= 1 and self.batch_size % self.grad_accum == 0,
             "grad_accum must divide batch_size"),
            (self.lr > 0, "lr must be positive"),
            (self.k_pos >= 1 and self.k_neg >= 1, "k_pos and k_neg must be >= 1"),
            (self.n_neg >= 1, "n_neg (H) must be >= 1"),
            (self.lam >= 0, "lam must be >= 0"),
            (self.tie_break in ("index", "random"), "tie_break must be 'index' or 'random'"),
            (self.train_scores in ("raw", "metric"), "train_scores must be 'raw' or 'metric'"),
            (self.temperature > 0 and self.ss_temperature > 0, "temperatures must be positive"),
            (self.group_by in ("cluster", "task"), "group_by must be 'cluster' or 'task'"),
            (0 <= self.novelty_quantile < 1, "novelty_quantile must be in [0, 1) (0: no novelty fallback)"),
            (self.select_by in ("train", "train-calibrated", "val"),
             "select_by must be 'train', 'train-calibrated' or 'val'"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (self.n_clusters >= 1, "n_clusters must be >= 1"),
            (self.length_window >= 1, "length_window must be >= 1"),
            (self.eval_every >= 0 and self.eval_max_per_task >= 0, "eval settings must be >= 0"),
            (self.save_dtype in (None, "float16", "bfloat16", "float32"),
             "save_dtype must be float16, bfloat16 or float32"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid training config: {message}")

    @property
    def effective_head_lr(self) -> float:
        if self.head_lr is not None:
            return self.head_lr
        return 1e-2 if self.freeze_encoder else self.lr

    def router_options(self) -> dict[str, Any]:
        """The :class:`~routerdc.model.router.RouterConfig` fields this recipe sets (for ``RouterDC.build``)."""
        return {"pooling": self.pooling, "similarity": self.similarity, "temperature": self.temperature,
                "max_length": self.max_length, "projection": self.projection,
                "normalization": self.normalization}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("train_files", "test_files", "id_tasks"):
            if d[key] is not None:
                d[key] = list(d[key])
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config fields {unknown}; known: {sorted(known)}")
        return cls(**dict(d))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        """A training config JSON, or a router (its folder or ``config.json``): its recipe."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the training config ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the training config must be a JSON object")
        if data.get("format") == "routerdc":  # a router's config.json: retrain it from its recipe
            recipe = data.get("recipe")
            if not isinstance(recipe, dict) or not recipe:
                raise ValueError(f"{path}: this router records no recipe to retrain it from")
            data = {k: v for k, v in recipe.items() if k != "train_tasks"}
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
