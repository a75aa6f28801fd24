"""The options of ``python -m routerdc train``: one per :class:`~routerdc.train.config.TrainConfig`
field, with its help text. Registered by :mod:`routerdc.cli.main`; argparse only at import."""

from __future__ import annotations

import argparse
import dataclasses

# Help for every TrainConfig field exposed as an option of `train`.
TRAIN_HELP: dict[str, str] = {
    "train_files": "training score files (.json/.jsonl/.csv); default: the paper's 5 in-distribution sets",
    "test_files": "test score files evaluated every --eval-every steps; default: the paper's 8 test sets",
    "output_dir": "where the best router is written (atomically)",
    "samples_per_task": "truncate or repeat each training task to N rows (0: keep as is)",
    "missing": "rows with absent scores: error, drop or zero",
    "cost_rate": "train on score - cost_rate * cost (RouterBench files carry costs)",
    "train_scores": "scores the losses see: raw (the paper: the files' scores; multiple choice as the probability "
                    "of the right answer) or metric (as the test metric counts them: multiple choice as "
                    "correct/wrong, pass rates as is)",
    "group_by": "groups of the sample-sample loss: cluster ids or task ids",
    "n_clusters": "k-means clusters when the data carry no cluster ids (or with --recluster)",
    "cluster_reduce": "reduction before k-means: none, pca or tsne (the paper's)",
    "recluster": "recompute cluster ids even when the files carry them",
    "id_tasks": "in-distribution task names (default: the training tasks)",
    "encoder": "encoder: all-MiniLM-L6-v2 (embedded), a hub id such as microsoft/mdeberta-v3-base, or a folder",
    "pooling": "cls (first token, the paper's) or mean",
    "similarity": "cos (the paper's) or dot",
    "temperature": "tau in softmax(sim / tau)",
    "max_length": "max tokens per query; longer queries are truncated from the left",
    "projection": "add a d x d linear projection after pooling",
    "normalization": "text normalisation: none, anyascii (all text to ASCII; Chinese to pinyin) or "
                     "translit-unk (only characters the tokenizer lacks)",
    "k_pos": "K+: top-scoring LLMs pulled towards the query",
    "k_neg": "K-: bottom-scoring LLMs pushed away",
    "neg_threshold": "ignore negatives scoring above this",
    "tie_break": "order of LLMs with equal scores when picking positives/negatives: index (column order, "
                 "biased towards the first columns) or random (a fresh permutation per query)",
    "lam": "lambda, weight of the sample-sample loss (0 disables it)",
    "n_neg": "H: out-group negatives per query in the sample-sample loss",
    "ss_temperature": "temperature of the sample-sample loss",
    "lr": "AdamW learning rate of the encoder",
    "head_lr": "learning rate of the LLM embeddings (default: --lr, or 1e-2 with --freeze-encoder)",
    "weight_decay": "AdamW weight decay",
    "batch_size": "queries per step",
    "grad_accum": "micro-batches per step, for small memory (the sample-sample loss is in-micro-batch)",
    "steps": "optimiser steps",
    "length_window": "group queries of similar length within windows of N batches (1: random batches)",
    "bf16": "bf16 autocast on CUDA",
    "cpu_bf16": "bf16 autocast on a CPU with AMX-BF16 or AVX512-BF16 (fp32 master weights; ignored elsewhere)",
    "freeze_encoder": "cache the encoder's embeddings once and train only the LLM embeddings (+ projection)",
    "eval_every": "evaluate every N steps (0: only at the end)",
    "eval_max_per_task": "evaluate on at most N rows per task (0: all)",
    "select_by": "keep the best router by the train average (the paper's rule) or a val split",
    "val_fraction": "held-out fraction of each training task with --select-by val",
    "calibrate": "after training, fit one routing offset per LLM on all training rows (maximising the "
                 "training-set average; see `calibrate`)",
    "seed": "random seed",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "cache_dir": "where frozen-encoder embeddings are cached (default: $ROUTERDC_CACHE or ~/.cache/routerdc)",
    "save_dtype": "save weights as float16 / bfloat16 / float32",
    "max_shard_size": "split saved weights into shards of at most this size (e.g. 15MB)",
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_train_options(p: argparse.ArgumentParser) -> None:
    from routerdc.train.config import TrainConfig

    p.add_argument("--config", help="a training config JSON (train.json); options given here override it")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "data_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f"{TRAIN_HELP[f.name]} (default: {default})"
        if f.name in ("train_files", "test_files", "id_tasks"):
            p.add_argument(flag, nargs="+", default=None, help=help_)
        elif isinstance(default, bool):
            p.add_argument(flag, type=_bool, nargs="?", const=True, default=None, help=help_)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            if f.name in ("head_lr",):
                kind = float
            p.add_argument(flag, type=kind, default=None, help=help_)
