"""How much of each test set the encoder's tokenizer cannot read: the share of [UNK] tokens and of
queries with at least 10% [UNK], per task and text normalisation.

    python scripts/unk_stats.py [--encoder all-MiniLM-L6-v2] [--output results/unk_stats.json]

Part of the Chinese-task study of README (MiniLM's vocabulary holds about half of the common
Chinese characters); the routing accuracy side comes from ``python -m routerdc evaluate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unk_stats(tokenizer, texts: Sequence[str], max_length: int = 512) -> dict[str, float]:
    """``{"unk_token_share", "queries_10pct_unk"}`` of ``texts`` (special tokens excluded)."""
    unk = tokenizer.unk_token_id
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    n_tok = sum(len(ids) for ids in enc)
    n_unk = sum(ids.count(unk) for ids in enc)
    heavy = sum(1 for ids in enc if ids and ids.count(unk) >= 0.1 * len(ids))
    return {"unk_token_share": n_unk / max(n_tok, 1), "queries_10pct_unk": heavy / max(len(enc), 1)}


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.data import load_many, paper_files
    from routerdc.model.encoder import NORMALIZATIONS, load_tokenizer, normalize_texts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="all-MiniLM-L6-v2")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", default=str(ROOT / "results" / "unk_stats.json"))
    args = p.parse_args(argv)

    tok = load_tokenizer(args.encoder)
    rows = []
    for s in load_many(paper_files(args.data_dir)[1]):
        for mode in NORMALIZATIONS:
            st = unk_stats(tok, normalize_texts(s.queries, mode, tok))
            rows.append({"task": s.task, "normalization": mode, **{k: round(v, 4) for k, v in st.items()}})
    print(f"{'task':<16}{'normalization':<15}{'[UNK] tokens':>13}{'queries >=10% [UNK]':>21}")
    for r in rows:
        print(f"{r['task']:<16}{r['normalization']:<15}{r['unk_token_share']:>13.1%}{r['queries_10pct_unk']:>21.1%}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"encoder": args.encoder, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
