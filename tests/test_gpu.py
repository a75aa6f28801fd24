"""CUDA paths: bf16 autocast training and routing on a GPU. Skipped when no GPU is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routerdc.data import ScoreSet
from routerdc.model.router import RouterDC
from routerdc.train.trainer import TrainConfig, train

pytestmark = pytest.mark.gpu


def _sets() -> list[ScoreSet]:
    rng = np.random.default_rng(0)
    llms = ("a", "b", "c", "d")
    out = []
    for task in ("mmlu", "gsm8k"):
        queries = tuple(f"{task} question {i}: what is {i} + {i}?" for i in range(32))
        out.append(ScoreSet(task, "probability", llms, queries, rng.choice([0.0, 1.0], size=(32, 4)),
                            clusters=np.arange(32) % 3))
    return out


def test_bf16_training_on_cuda(tmp_path):
    assert torch.cuda.is_available()
    cfg = TrainConfig(output_dir=str(tmp_path / "r"), steps=4, batch_size=16, eval_every=2, device="cuda",
                      bf16=True, samples_per_task=0)
    result = train(cfg, train_sets=_sets())
    assert all(np.isfinite(h["total"]) for h in result.history)
    router = RouterDC.from_pretrained(result.output_dir, device="cuda")
    routing = router.route(["What is 2 + 2?"])
    assert routing.probs.shape == (1, 4) and router.device.type == "cuda"
