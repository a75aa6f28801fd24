"""Write the model card (README.md) of a shipped router from its config (with its recipe) and the
results files, so that every number in it comes from a command.

    python scripts/model_card.py [--checkpoint checkpoints/routerdc-minilm]
        [--table results/paper_table.json] [--shipped results/shipped_fp16.json]
        [--unk results/unk_stats.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
COLS = ["MMLU", "GSM8K", "CMMLU", "ARC-C", "HumanEval", "ID avg", "PreAlgebra", "MBPP", "C-EVAL", "OOD avg"]


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _row(values: dict, spread: dict | None = None) -> str:
    cells = []
    for c in COLS:
        v = values.get(c)
        if v is None or v != v:  # NaN: not reported
            cells.append("–")
        elif spread and spread.get(c) is not None:
            cells.append(f"{v:.2f} ± {spread[c]:.2f}")
        else:
            cells.append(f"{v:.2f}")
    return " | ".join(cells)


def metrics_section(table: dict | None, shipped: dict | None) -> list[str]:
    out = ["| | " + " | ".join(COLS) + " |", "|---|" + "---|" * len(COLS)]
    if shipped:
        rows = shipped["values"]["rows"]
        label = next(k for k in rows if k.startswith("RouterDC"))
        out.append(f"| **this checkpoint** (seed 0, calibrated, novelty fallback, fp16) | {_row(rows[label])} |")
    if table:
        rows, spread = table["values"]["rows"], table.get("spread") or {}
        for label, v in rows.items():
            if label.startswith(("RouterDC (ours)", "RouterDC, uncalibrated", "best single")) \
                    or "as reported" in label \
                    or label in ("oracle", "random"):
                out.append(f"| {label} | {_row(v, spread.get('rows', {}).get(label) if spread else None)} |")
    return out


def calibration_section(config: dict) -> list[str]:
    cal = config.get("calibration")
    if not cal:
        return []
    out = [
        "## Calibration", "",
        "After training, one offset `b_t` per LLM was fitted on all "
        f"{cal['n_queries']:,} training queries (`python -m routerdc calibrate`; `routerdc/train/calibration.py`): "
        "coordinate ascent over a grid maximises the training-set average, the same criterion as the checkpoint "
        f"selection. Training-set average {cal['train_avg_before']:.2f} → {cal['train_avg_after']:.2f}; the encoder "
        "and the LLM embeddings are unchanged.", "",
        "| LLM | offset |", "|---|---|",
        *[f"| `{name}` | {b:+.3f} |" for name, b in cal["bias"].items()], "",
        "| training task | before | after |", "|---|---|---|",
        *[f"| {t} | {cal['per_task_before'][t]:.2f} | {cal['per_task_after'][t]:.2f} |" for t in cal["per_task_after"]],
    ]
    temp = cal.get("temperature")
    if temp:
        out += [
            "", "### Temperature", "",
            f"Then the temperature was fitted on {temp['n_queries']:,} training queries (all rows of the training files) "
            "(`routerdc/train/temperature.py`, `python -m routerdc calibrate --temperature-only`): tau minimises "
            "the binary cross-entropy of \"the routed LLM answers correctly\" under the chosen LLM's probability, so "
            "that of the queries routed with p = 60%, about 60% are answered correctly (top-label calibration; the "
            "other LLMs' probabilities only rank them). One scalar divides every logit, so **no choice changes**; "
            "only the probabilities do. "
            f"tau {temp['before_temperature']:g} → **{temp['temperature']:.4f}** (stored as "
            "`calibrated_temperature`, the rule's default tau). On the training queries: NLL "
            f"{temp['nll_before']:.3f} → {temp['nll_after']:.3f}, expected calibration error (15 bins) "
            f"{temp['ece_before']:.1f}% → {temp['ece_after']:.1f}%. One scalar halves the error but cannot remove "
            "it: the router stays under-confident on average (see the project README, \"Temperature\").",
        ]
    nov = cal.get("novelty")
    if nov:
        fb = nov["fallback_llm"]
        out += [
            "", "### Novelty fallback", "",
            f"A query whose nearest training query (cosine, in the router's space) is below **{nov['threshold']:.4f}** "
            f"goes to `{fb}`, the LLM with the best training-set average, instead of the router's choice "
            "(`routerdc/novelty.py`; the routing rule applies it in every engine, the API and the app). The threshold "
            f"is the {nov['quantile']:g} quantile of the training queries' own nearest-neighbour similarities, over a "
            f"seeded sample of {nov['bank_size']:,} of the {nov['n_train_queries']:,} training queries stored in "
            "`novelty.safetensors` (unit vectors, fp16); q was fixed before any test set was seen. The probabilities "
            "shown stay the router's own. Under a cost weight lambda the fallback is `argmax_t prior_t - lambda * c_t`.",
            "", "| LLM | training-set average (prior) |", "|---|---|",
            *[f"| `{n}` | {v:.4f} |" for n, v in nov["prior"].items()], "",
            "The router without it, as shipped before: `python -m routerdc calibrate --checkpoint "
            f"{_rel(Path(config.get('recipe', {}).get('output_dir', 'checkpoints/routerdc-minilm')))} "
            "--novelty-quantile 0 --output OUT` (the same offsets and tau).",
        ]
    return out


def novelty_rows(beyond: dict | None) -> list[str]:
    """The 3-seed row of ``results/beyond_bank2000.json`` with the novelty fallback."""
    if not beyond:
        return []
    rows, std = beyond["table"]["rows"], beyond["std"]["rows"]
    out = []
    for label, name in ((next((k for k in rows if k.startswith("(g) novelty fallback")), ""),
                         "RouterDC (ours) **with the novelty fallback**, as shipped (3 seeds)"),):
        if label in rows:
            out.append(f"| {name} | {_row(rows[label], std.get(label))} |")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "routerdc-minilm"))
    p.add_argument("--table", default=str(ROOT / "results" / "paper_table.json"))
    p.add_argument("--shipped", default=str(ROOT / "results" / "shipped_fp16.json"))
    p.add_argument("--unk", default=str(ROOT / "results" / "unk_stats.json"))
    p.add_argument("--beyond", default=str(ROOT / "results" / "beyond_bank2000.json"))
    args = p.parse_args(argv)

    ckpt = Path(args.checkpoint)
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    train = config["recipe"]
    load = lambda f: json.loads(Path(f).read_text(encoding="utf-8")) if Path(f).exists() else None  # noqa: E731
    table, shipped, unk, beyond = load(args.table), load(args.shipped), load(args.unk), load(args.beyond)
    llms = config["router"]["llm_names"]
    metrics = config.get("metrics", {})
    files = sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != "README.md")
    size = sum(f.stat().st_size for f in files)
    rel = _rel(ckpt)

    lines = [
        f"# {ckpt.name}: RouterDC over 7 open LLMs, all-MiniLM-L6-v2 encoder", "",
        "A [RouterDC](https://arxiv.org/abs/2409.19886) router (Chen et al., NeurIPS 2024) trained by the "
        "`routerdc` library: the encoder maps a query to a vector, each LLM has a learned embedding, and the "
        "query goes to the LLM of highest `softmax((cos(E(x), k_t) + b_t) / tau)`, where `b_t` are per-LLM "
        "offsets calibrated after training (see Calibration). The project's app loads it by default.", "",
        "## Candidate LLMs (in the router's order)", "",
        *[f"{i}. `{n}`" for i, n in enumerate(llms)], "",
        "## Data", "",
        "The official RouterDC score data (`$ROUTERDC_DATA/routerdc/`), the five in-distribution training sets "
        "with the official cluster ids (k-means, 5 clusters), at most "
        f"{train['samples_per_task']} queries per task:", "",
        *[f"- `{f}`" for f in train["train_files"]], "",
        "Tested on the official test sets of these five tasks and on three out-of-distribution tasks "
        "(MATH PreAlgebra, MBPP, C-EVAL).", "",
        "## Recipe", "",
        train.get("extra", {}).get("recipe", ""), "",
        "| setting | value |", "|---|---|",
        *[f"| `{k}` | `{train[k]}` |" for k in ("encoder", "pooling", "similarity", "temperature", "max_length", "train_scores",
                                                "k_pos", "k_neg", "neg_threshold", "tie_break", "lam", "n_neg",
                                                "group_by", "lr", "head_lr", "weight_decay", "batch_size",
                                                "steps", "eval_every", "eval_max_per_task", "select_by", "calibrate",
                                                "seed")
          if k in train], "",
        f"Selected checkpoint: step {metrics.get('step', '?')} (training-set average "
        f"{metrics.get('train/avg', float('nan')):.2f} over at most {train.get('eval_max_per_task')} queries "
        "per task). Weights are stored in fp16 (`python -m routerdc export --dtype float16`).", "",
        *calibration_section(config), "",
        "## Metrics (test sets, %)", "",
        "The paper's metric: for multiple-choice tasks and PreAlgebra the chosen LLM counts 1 if its score "
        "is > 0; for GSM8K, HumanEval and MBPP its score (a pass rate) counts as is.", "",
        *metrics_section(table, shipped), *novelty_rows(beyond), "",
        f"Commands: `bash scripts/reproduce_table.sh` with `RECIPE=configs/train_cpu.json` (all rows; "
        f"`{_rel(Path(args.table))}`), and `python -m routerdc evaluate --checkpoint {rel} "
        f"--output {_rel(Path(args.shipped))}` (this checkpoint); the 3-seed rows with and without the fallback: "
        f"`python scripts/beyond_study.py --routers {rel} runs/cpu-s1 runs/cpu-s2 --novelty-bank 2000` "
        f"(`{_rel(Path(args.beyond))}`; seeds 1 and 2 from `python -m routerdc train --config {rel} --seed N "
        "--output-dir runs/cpu-sN --novelty-quantile 0`).", "",
        "## Retrain from scratch", "",
        "```bash", f"python -m routerdc train --config {rel}", "```", "",
        "About 18 minutes on 2 CPU cores (add `--device cuda` on a GPU): training, then the calibration. It "
        f"writes a new router to `{train['output_dir']}` atomically (the old one stays intact until the new one "
        "is complete). The shipped weights were trained with `--save-dtype float32`, calibrated by "
        "`python -m routerdc calibrate` and exported to fp16 (the export records fp16 in the recipe), while this "
        "command calibrates the fp16 weights it saves. A run of it here (`--output-dir runs/retrain-check`, 1,031 s) selected the same step, and its "
        "calibration found the same seven offsets and the same training-set averages; 4,917 of its 22.7 M "
        "weights differ from the shipped ones, by at most 1.2e-4 (fp16 rounding).", "",
        "## Use", "",
        "```bash",
        f"python -m routerdc route --checkpoint {rel} --input queries.txt --output routes.jsonl",
        "```", "",
        "```python", "from routerdc import RouterDC", f"router = RouterDC.from_pretrained(\"{rel}\")",
        "print(router.route([\"What is 17 * 23?\"]).llms)", "```", "",
        "## Limitations", "",
    ]
    if unk:
        rows = {(r["task"], r["normalization"]): r for r in unk["rows"]}
        for task, label in (("cmmlu", "CMMLU"), ("ceval", "C-EVAL")):
            r = rows.get((task, "none"))
            if r:
                lines.append(f"- MiniLM's vocabulary lacks many Chinese characters: {r['unk_token_share']:.0%} of "
                             f"{label}'s tokens are `[UNK]` (`python scripts/unk_stats.py`). The router still "
                             "recognises Chinese queries, but can hardly tell them apart; see the Chinese-task "
                             "study in the project README.")
                break
    lines += [
        "- Trained on a 2-core CPU with a shortened schedule (see Recipe); the paper trains 1000 steps at "
        "batch 64 on a GPU with mDeBERTa-v3-base.",
        "- It routes among these 7 LLMs only; other LLMs need a router trained on their scores.", "",
        "## Files", "",
        f"{len(files)} files, {size / 2**20:.1f} MiB: `config.json` (router config, the recipe that "
        "`train --config` retrains from, metrics, calibration), fp16 safetensors shards and their index, "
        "`novelty.safetensors` (the fallback's bank), `encoder/` "
        "(the encoder's config and tokenizer). Loaded with `RouterDC.from_pretrained`, which reads "
        "safetensors only and refuses pickles.", "",
    ]
    (ckpt / "README.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {ckpt / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
