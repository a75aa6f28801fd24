"""The training recipe, as a frozen dataclass saved beside the trained router (``train.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from routerdc.model.encoder import DEFAULT_ENCODER


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
    Speed: length_window (1 = random batches), bf16 (autocast on CUDA), cpu_bf16 (bf16 autocast on a
        CPU with AMX-BF16 or AVX512-BF16; fp32 master weights), freeze_encoder (cache the
        embeddings once, on disk under ``cache_dir`` (default ``$ROUTERDC_CACHE`` or
        ``~/.cache/routerdc``), and train only the LLM embeddings and the optional projection;
        their learning rate is ``head_lr``, default 1e-2 when frozen, else ``lr``).
    Evaluation: eval_every steps (0: only at the end), eval_max_per_task caps each eval set
        (0: all rows), select_by ``train`` (the paper's rule: best training-set average) or
        ``val`` (a held-out ``val_fraction`` of the training rows).
    Calibration: calibrate fits one routing offset per LLM on all training rows after the run,
        maximising the training-set average (:mod:`routerdc.train.calibration`); off in the paper.
    """

    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    data_dir: str | None = None
    output_dir: str = "runs/router"
    samples_per_task: int = 1000
    missing: str = "error"
    cost_rate: float = 0.0
    train_scores: str = "raw"
    group_by: str = "cluster"
    n_clusters: int = 5
    cluster_reduce: str = "none"
    recluster: bool = False
    id_tasks: tuple[str, ...] | None = None

    encoder: str = DEFAULT_ENCODER
    pooling: str = "cls"
    similarity: str = "cos"
    temperature: float = 1.0
    max_length: int = 512
    projection: bool = False
    normalization: str = "none"

    k_pos: int = 3
    k_neg: int = 3
    neg_threshold: float = 0.5
    tie_break: str = "index"
    lam: float = 1.0
    n_neg: int = 3
    ss_temperature: float = 1.0

    lr: float = 5e-5
    head_lr: float | None = None
    weight_decay: float = 0.01
    batch_size: int = 64
    grad_accum: int = 1
    steps: int = 1000

    length_window: int = 4
    bf16: bool = True
    cpu_bf16: bool = False
    freeze_encoder: bool = False

    eval_every: int = 100
    eval_max_per_task: int = 0
    select_by: str = "train"
    val_fraction: float = 0.1
    calibrate: bool = False

    seed: int = 0
    device: str = "auto"
    cache_dir: str | None = None
    save_dtype: str | None = None
    max_shard_size: str = "5GB"
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
            (self.select_by in ("train", "val"), "select_by must be 'train' or 'val'"),
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
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the training config ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the training config must be a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
