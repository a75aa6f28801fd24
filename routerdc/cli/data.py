"""``python -m routerdc data {fetch,check,manifest}``: the score data from the official RouterDC
repository's files (see :mod:`routerdc.data.fetch`). Registered by :mod:`routerdc.cli.main`; argparse
only at import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from routerdc.data.registry import DATA_ENV


def add_data_command(sub: Any) -> None:
    p = sub.add_parser("data", help="download (fetch) or check the score data against the shipped SHA-256 manifest")
    dsub = p.add_subparsers(dest="data_command", required=True)
    dest_help = f"data directory (default: ${DATA_ENV} or ../shared/data beside the checkout)"
    f = dsub.add_parser("fetch", help="download the missing score files, verified by SHA-256 (resumes a cut download)")
    f.add_argument("--dest", help=dest_help)
    f.add_argument("--url", help="base URL holding datasets/<folder>/<file> (default: $ROUTERDC_DATA_URL, "
                                 "else the official repository's raw files)")
    f.add_argument("--retries", type=int, default=3, help="attempts per file after a network error (default: 3)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    c = dsub.add_parser("check", help="verify the data directory against the manifest (exit 1 on any problem)")
    c.add_argument("--dest", help=dest_help)
    m = dsub.add_parser("manifest", help="(maintainers) write the manifest of a data directory as JSON")
    m.add_argument("--dest", help=dest_help)
    m.add_argument("--output", help="output file (default: stdout)")


def cmd_data(args: argparse.Namespace) -> int:
    from routerdc.data.fetch import FetchProgress, base_url, build_manifest, check, fetch
    from routerdc.data.registry import data_dir_path

    dest = data_dir_path(args.dest)
    if args.data_command == "check":
        problems = check(dest)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{dest}: {'all files verified' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
        return 1 if problems else 0
    if args.data_command == "manifest":
        text = json.dumps(build_manifest(dest), indent=1) + "\n"
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, desc="score data", disable=args.quiet, file=sys.stderr)

    def on_progress(p: FetchProgress) -> None:
        bar.total = p.bytes_total
        bar.n = p.bytes_done
        bar.set_postfix_str(f"{p.files_done}/{p.files_total} files", refresh=False)
        bar.refresh()

    print(f"fetching the score data from {base_url(args.url)} into {dest}", file=sys.stderr)
    try:
        rep = fetch(dest, url=args.url, progress=on_progress, retries=args.retries)
    finally:
        bar.close()
    print(f"{dest}: {len(rep.downloaded)} file(s) downloaded ({rep.bytes / 1e6:.1f} MB in {rep.seconds:.1f} s), "
          f"{len(rep.present)} already there; all verified", file=sys.stderr)
    return 0
