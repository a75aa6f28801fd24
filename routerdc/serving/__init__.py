"""Serving candidate LLMs behind the router: models config, backends and an OpenAI-compatible API.

- :mod:`.config`: the models config (YAML/JSON) and its validation against a router;
- :mod:`.backends`: ``transformers``, ``openai``/``vllm`` and ``recorded`` backends;
- :mod:`.registry`: the backends of a config, created lazily;
- :mod:`.api`: :func:`~.api.create_api`, the routed ``/v1/chat/completions`` and ``/v1/models``;
- :mod:`.server`: ``python -m routerdc serve``.

Nothing heavy is imported here.
"""

from typing import Any

__all__ = ["ConfigError", "ModelSpec", "ModelsConfig", "load_models_config"]


def __getattr__(name: str) -> Any:  # lazy, so `python -m routerdc --help` stays light
    if name in __all__:
        from . import config

        return getattr(config, name)
    raise AttributeError(name)
