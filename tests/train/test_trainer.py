"""Trainer: real MiniLM training on a subset of the shared data, frozen mode, cancel, checkpoints."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from routerdc.train.batching import length_grouped_batches, sorted_batches
from routerdc.train.cluster import assign_clusters, cluster_embeddings
from routerdc.data import load_score_set, paper_files
from routerdc.model.router import RouterDC
from routerdc.train.trainer import TrainConfig, Trainer, train


@pytest.fixture(scope="module")
def small_sets(data_dir):
    """24 training rows from each of 3 tasks (with the paper's cluster ids), 20 test rows each."""
    train_files, test_files = paper_files(data_dir)
    rng = np.random.default_rng(0)
    pick = lambda s, n: s.subset(np.sort(rng.choice(len(s), n, replace=False)))  # noqa: E731
    train = [pick(load_score_set(f), 24) for f in train_files[:3]]
    test = [pick(load_score_set(f), 20) for f in (test_files[0], test_files[5])]  # MMLU (ID), PreAlgebra (OOD)
    return train, test


def test_length_grouped_batches_cover_each_epoch():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4]
    gen = torch.Generator().manual_seed(0)
    it = length_grouped_batches(lengths, 2, window=2, generator=gen)
    epoch = [next(it) for _ in range(4)]
    assert sorted(i for b in epoch for i in b) == list(range(8))
    for b in epoch:  # each window of 4 is sorted by length, so a batch holds neighbours
        assert len(b) == 2
    again = length_grouped_batches(lengths, 2, window=2, generator=torch.Generator().manual_seed(0))
    assert [next(again) for _ in range(4)] == epoch
    assert sorted_batches(lengths, 3) == [[1, 5, 3], [7, 0, 4], [6, 2]]
    with pytest.raises(ValueError, match="empty"):
        next(length_grouped_batches([], 2))


def test_real_training_loss_goes_down_and_checkpoint_loads(small_sets, tmp_path):
    train_sets, test_sets = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "router"), steps=8, batch_size=16, lr=1e-4, head_lr=5e-2,
                      samples_per_task=8, max_length=64, eval_every=4, seed=0)
    seen: list[tuple[int, dict, dict | None]] = []
    result = train(cfg, train_sets=train_sets, test_sets=test_sets, on_step=lambda s, l, m: seen.append((s, l, m)))
    assert [s for s, _, _ in seen] == list(range(1, 9))
    losses = [l["total"] for _, l, _ in seen]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert all(set(l) == {"total", "sample_llm", "sample_sample"} for _, l, _ in seen)
    evals = [m for _, _, m in seen if m is not None]
    assert len(evals) == 2 and {"train/avg", "test/mmlu", "test/id_avg", "test/ood_avg"} <= set(evals[0])
    assert result.best_step in (4, 8) and result.output_dir == tmp_path / "router"
    router = RouterDC.from_pretrained(result.output_dir)
    assert router.meta.recipe["steps"] == 8 and router.meta.metrics["step"] == result.best_step
    assert (result.output_dir / "history.json").exists() and not (result.output_dir / "train.json").exists()
    assert TrainConfig.from_json(result.output_dir).to_dict() == cfg.to_dict()  # the one recipe retrains it
    assert all(llm in router.config.llm_names for llm in router.route(["What is 3+4?"]).llms)


def test_frozen_encoder_cancel_keeps_last_good_checkpoint(small_sets, tmp_path):
    train_sets, test_sets = small_sets
    cancel = threading.Event()

    def on_step(step, losses, metrics):
        if step == 5:
            cancel.set()

    cfg = TrainConfig(output_dir=str(tmp_path / "frozen"), steps=50, batch_size=16, freeze_encoder=True,
                      projection=True, samples_per_task=16, eval_every=4, seed=1)
    result = train(cfg, train_sets=train_sets, test_sets=test_sets, on_step=on_step, cancel=cancel)
    assert result.cancelled and result.steps_done == 5 and result.best_step == 4
    router = RouterDC.from_pretrained(result.output_dir)
    assert router.meta.encoder_weights == "reference" and router.projection is not None
    assert router.meta.metrics["step"] == 4


def test_frozen_mode_trains_only_the_head(small_sets, tmp_path):
    train_sets, _ = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "f"), steps=30, batch_size=16, freeze_encoder=True,
                      samples_per_task=16, eval_every=0, group_by="task", seed=2)
    trainer = Trainer(cfg, train_sets=train_sets)
    result = trainer.run()
    base = RouterDC.build(train_sets[0].llms, seed=2)
    trained = RouterDC.from_pretrained(result.output_dir)
    enc_equal = all(torch.equal(a, b) for a, b in zip(base.encoder.state_dict().values(),
                                                        trained.encoder.state_dict().values()))
    assert enc_equal
    assert not torch.allclose(base.llm_embeddings.weight, trained.llm_embeddings.weight)
    assert result.history[-1]["total"] < result.history[0]["total"]


def test_calibrate_fits_offsets_on_the_training_rows_after_the_run(small_sets, tmp_path):
    train_sets, _ = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "c"), steps=4, batch_size=16, freeze_encoder=True,
                      samples_per_task=16, eval_every=0, calibrate=True, seed=3)
    result = train(cfg, train_sets=train_sets)
    cal = result.calibration
    assert cal is not None and cal["n_queries"] == sum(len(s) for s in train_sets)  # all rows, not 16 per task
    assert cal["train_avg_after"] >= cal["train_avg_before"]
    router = RouterDC.from_pretrained(result.output_dir)
    assert router.config.llm_bias == tuple(cal["bias"].values())
    assert router.meta.calibration["tasks"] == [s.task for s in train_sets]


def test_select_by_the_calibrated_training_average(small_sets, tmp_path):
    train_sets, _ = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "tc"), steps=4, batch_size=16, freeze_encoder=True,
                      samples_per_task=16, eval_every=2, select_by="train-calibrated", calibrate=True, seed=1)
    result = train(cfg, train_sets=train_sets)
    evals = [h for h in result.history if "train/avg" in h]
    assert len(evals) == 2 and all(h["train/avg_calibrated"] >= h["train/avg"] - 1e-9 for h in evals)
    best = max(evals, key=lambda h: h["train/avg_calibrated"])
    assert result.best_step == best["step"] and result.best_score == best["train/avg_calibrated"]
    # The router it saved was then calibrated on all training rows, temperature included.
    router = RouterDC.from_pretrained(result.output_dir)
    assert router.config.llm_bias is not None and router.config.calibrated_temperature is not None


def test_metric_train_scores_reach_the_losses(small_sets, tmp_path):
    train_sets, _ = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "m"), steps=1, batch_size=8, freeze_encoder=True,
                      samples_per_task=8, eval_every=0, train_scores="metric", tie_break="random")
    trainer = Trainer(cfg, train_sets=train_sets)
    mmlu = next(s for s in trainer.train_sets if s.task == "mmlu")
    raw = next(s for s in train_sets if s.task == "mmlu")
    assert set(np.unique(mmlu.scores)) <= {0.0, 1.0} and not set(np.unique(raw.scores)) <= {0.0, 1.0}
    assert np.array_equal(mmlu.scores > 0, raw.scores > 0)
    gsm = next(s for s in trainer.train_sets if s.task == "gsm8k")
    assert np.array_equal(gsm.scores, next(s for s in train_sets if s.task == "gsm8k").scores)


def test_grad_accum_and_val_selection(small_sets, tmp_path):
    train_sets, _ = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "g"), steps=2, batch_size=8, grad_accum=2, max_length=32,
                      samples_per_task=8, select_by="val", val_fraction=0.25, eval_every=1, eval_max_per_task=6)
    result = train(cfg, train_sets=train_sets)
    assert "val/avg" in result.best_metrics and result.steps_done == 2


def test_config_validation_and_json(tmp_path):
    with pytest.raises(ValueError, match="grad_accum must divide"):
        TrainConfig(batch_size=10, grad_accum=3)
    with pytest.raises(ValueError, match="group_by"):
        TrainConfig(group_by="llm")
    with pytest.raises(ValueError, match="train_scores must be 'raw' or 'metric'"):
        TrainConfig(train_scores="binary")
    cfg = TrainConfig(train_files=("a.json",), steps=7)
    path = tmp_path / "train.json"
    import json

    path.write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_json(path) == cfg
    path.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ValueError, match=r"unknown training config fields \['stepz'\]"):
        TrainConfig.from_json(path)


def test_cluster_embeddings_recovers_blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 10
    x = np.concatenate([c + rng.normal(size=(20, 16)) for c in centers])
    labels = cluster_embeddings(x, 3, seed=0)
    for k in range(3):
        assert len(set(labels[k * 20:(k + 1) * 20])) == 1
    assert len(set(labels)) == 3
    np.testing.assert_array_equal(cluster_embeddings(x, 3, seed=0), labels)
    assert len(set(cluster_embeddings(x, 3, reduce="tsne", seed=0))) == 3
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_embeddings(x, 100)


def test_assign_clusters_with_real_encoder(minilm_router, tiny_set):
    (out,) = assign_clusters([tiny_set.with_clusters(np.zeros(12))], minilm_router, n_clusters=2, seed=0)
    assert out.clusters.shape == (12,) and set(out.clusters.tolist()) == {0, 1}


def test_saved_history_includes_the_saved_step(small_sets, tmp_path):
    import json

    train_sets, _ = small_sets
    cfg = TrainConfig(output_dir=str(tmp_path / "h"), steps=4, batch_size=16, freeze_encoder=True,
                      samples_per_task=16, eval_every=2, seed=3)
    result = train(cfg, train_sets=train_sets)
    saved = json.loads((result.output_dir / "history.json").read_text())
    assert saved[-1]["step"] == result.best_step and "train/avg" in saved[-1]


def test_router_options_cover_the_router_config():
    import dataclasses

    from routerdc.model.router import RouterConfig

    # llm_bias, calibrated_temperature and the novelty fallback (novelty_threshold, llm_prior) are fitted after
    # training (TrainConfig.calibrate, novelty_quantile) and llm_cost comes from the training files' recorded
    # costs: none is a recipe option.
    fields = {f.name for f in dataclasses.fields(RouterConfig)} - {"llm_names", "encoder", "init_std", "llm_bias",
                                                                    "llm_cost", "calibrated_temperature",
                                                                    "novelty_threshold", "llm_prior"}
    cfg = TrainConfig(normalization="anyascii", projection=True)
    assert set(cfg.router_options()) == fields
    assert RouterConfig(llm_names=("a",), **cfg.router_options()).normalization == "anyascii"


def test_cpu_bf16_autocast_rule(monkeypatch):
    """bf16 autocast trains the encoder on CPUs with native bf16 by default, never a frozen encoder's
    keys, never a CPU without bf16; CUDA follows its own flag."""
    from routerdc.inference.features import CpuFeatures
    from routerdc.train import trainer as trainer_mod

    assert TrainConfig().cpu_bf16 is True
    for flags, native in ((frozenset({"avx512_bf16"}), True), (frozenset({"amx_bf16"}), True),
                          (frozenset({"avx2", "avx512f"}), False)):
        monkeypatch.setattr(trainer_mod, "cpu_features", lambda f=flags: CpuFeatures("test CPU", 2, f))
        assert trainer_mod.bf16_autocast("cpu", cpu=True) is native
        assert trainer_mod.bf16_autocast("cpu", cpu=True, frozen=True) is False
        assert trainer_mod.bf16_autocast("cpu", cpu=False) is False
    assert trainer_mod.bf16_autocast("cuda", cuda=True, cpu=False, frozen=True) is True
    assert trainer_mod.bf16_autocast("cuda", cuda=False, cpu=True) is False
