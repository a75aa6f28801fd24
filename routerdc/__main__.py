"""``python -m routerdc``: see :mod:`routerdc.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
