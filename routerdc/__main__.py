"""``python -m routerdc``: see :mod:`routerdc.cli.main`."""

from routerdc.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
