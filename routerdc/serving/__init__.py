"""Serving candidate LLMs behind the router: models config, backends and an OpenAI-compatible API.

- :mod:`.config`: the models config (YAML/JSON) and its validation against a router;
- :mod:`.backends`: ``transformers``, ``openai``/``vllm`` and ``recorded`` backends;
- :mod:`.registry`: the backends of a config, created lazily;
- :mod:`.api`: :func:`~.api.create_api`, the routed ``/v1/chat/completions`` and ``/v1/models``;
- :mod:`.server`: ``python -m routerdc serve``.

Nothing heavy is imported here.
"""

from typing import Any

_WHERE = {
    "ConfigError": "config", "ModelSpec": "config", "ModelsConfig": "config", "load_models_config": "config",
    "Registry": "registry", "create_api": "api",
    "Backend": "backends", "BackendError": "backends", "SamplingParams": "backends",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:  # lazy, so `python -m routerdc --help` stays light
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
