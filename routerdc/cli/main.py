"""Command line: ``python -m routerdc {cluster,train,calibrate,evaluate,export,route,serve,serve-llms,
add-llm,remove-llm,costs,
import-lm-eval,collect,data}``.

Every command takes ``--data-dir`` (else ``$ROUTERDC_DATA``, else ``../shared/data``); data
files may be given relative to it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each thin module under :mod:`routerdc.cli` adds its own (argparse
    only at import; a command imports what it needs when it runs)."""
    from routerdc.cli.calibrate import add_calibrate_command
    from routerdc.cli.collect import add_collect_commands
    from routerdc.cli.costs import add_costs_command
    from routerdc.cli.data import add_data_command
    from routerdc.cli.evaluate import add_evaluate_command
    from routerdc.cli.export import add_export_command
    from routerdc.cli.fleet import add_fleet_commands
    from routerdc.cli.route import add_route_command
    from routerdc.cli.train import add_cluster_command, add_train_command
    from routerdc.serving.launcher import add_serve_llms_arguments
    from routerdc.serving.server import add_serve_arguments

    parser = argparse.ArgumentParser(prog="python -m routerdc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_cluster_command(sub)
    add_train_command(sub)
    add_calibrate_command(sub)
    add_evaluate_command(sub)
    add_export_command(sub)
    add_route_command(sub)
    add_serve_arguments(sub.add_parser("serve", help="the routed OpenAI-compatible API (/v1/chat/completions)"))
    add_serve_llms_arguments(sub.add_parser("serve-llms", help="launch a vLLM server per 'vllm' candidate"))
    add_fleet_commands(sub)
    add_costs_command(sub)
    add_collect_commands(sub)
    add_data_command(sub)
    return parser


def _lazy(module: str, name: str) -> Any:
    """The command ``name`` of ``module``, imported only when it runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)
    return run


COMMANDS = {"cluster": _lazy("routerdc.cli.train", "cmd_cluster"), "train": _lazy("routerdc.cli.train", "cmd_train"),
            "calibrate": _lazy("routerdc.cli.calibrate", "cmd_calibrate"),
            "evaluate": _lazy("routerdc.cli.evaluate", "cmd_evaluate"),
            "export": _lazy("routerdc.cli.export", "cmd_export"), "route": _lazy("routerdc.cli.route", "cmd_route"),
            "serve": _lazy("routerdc.serving.server", "cmd_serve"),
            "serve-llms": _lazy("routerdc.serving.launcher", "cmd_serve_llms"),
            "add-llm": _lazy("routerdc.cli.fleet", "cmd_add_llm"), "remove-llm": _lazy("routerdc.cli.fleet", "cmd_remove_llm"),
            "costs": _lazy("routerdc.cli.costs", "cmd_costs"),
            "import-lm-eval": _lazy("routerdc.cli.collect", "cmd_import_lm_eval"), "collect": _lazy("routerdc.cli.collect", "cmd_collect"),
            "data": _lazy("routerdc.cli.data", "cmd_data")}


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.checkpoint import CheckpointError
    from routerdc.data import DataError
    from routerdc.model.encoder import EncoderError

    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, CheckpointError, EncoderError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last saved router is intact", file=sys.stderr)
        return 130
