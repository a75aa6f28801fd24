"""Moved to :mod:`routerdc.inference.int8` (int8 dynamic quantization); this name stays as an alias of that module."""

import sys

from .inference import int8 as _moved

sys.modules[__name__] = _moved
