"""``python -m routerdc``: one thin module per command family; :mod:`.main` builds the parser.
argparse only at import: each command imports what it needs when it runs."""

from routerdc.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
