"""Moved to :mod:`routerdc.inference.onnx` (the ONNX form of a router); this name stays as an alias of
that module, and ``python -m routerdc.onnx_engine CHECKPOINT OUTPUT`` still exports."""

import sys

from .inference import onnx as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
sys.modules[__name__] = _moved
