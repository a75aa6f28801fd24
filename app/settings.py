"""The app's settings: command-line options, each with an environment variable.

| option | environment variable | default |
|---|---|---|
| --checkpoint | ROUTERDC_CHECKPOINT | checkpoints/routerdc-minilm (the shipped router) |
| --data-dir | ROUTERDC_DATA | ../shared/data beside the checkout |
| --models-config | ROUTERDC_MODELS_CONFIG | none (no generation backend; answers only from recorded data) |
| --launch-llms | ROUTERDC_LAUNCH_LLMS=1 | off: start a `vllm serve` process per `vllm` candidate (vLLM's venv: ROUTERDC_VLLM_PYTHON) |
| --host | ROUTERDC_HOST, else GRADIO_SERVER_NAME | 127.0.0.1 |
| --port | ROUTERDC_PORT, else GRADIO_SERVER_PORT | 7860 |
| --cache-dir | ROUTERDC_CACHE | ~/.cache/routerdc (embeddings and maps) |
| --runs-dir | ROUTERDC_RUNS | runs/app (routers trained in the app) |
| --map-method | ROUTERDC_MAP_METHOD | umap (pca: no numba, for tests) |
| --map-per-set | ROUTERDC_MAP_PER_SET | 250 queries per data set on the map |
| --max-rows | ROUTERDC_MAX_ROWS | 0 = all rows of each data set (a cap makes tests fast) |
| --torch-threads | ROUTERDC_TORCH_THREADS | 1 (several threads contend badly on small CPUs) |
| (no option) | ROUTERDC_DEVICE | cpu: the torch router's device (cuda on the GPU Space, with ROUTERDC_ENGINE=torch) |
| --engine | ROUTERDC_ENGINE | auto: the inference layer's pick for this router and machine (measured once, after the map; an ONNX pick starts without torch); or torch, torch-bf16, int8, onnx, onnx-int8 |
| --api-key | ROUTERDC_API_KEY | none: the routed API at /v1 (with a models config) is mounted only on a loopback --host |
| --allow-unauthenticated | ROUTERDC_ALLOW_UNAUTHENTICATED=1 | off: mount /v1 without a key on a public --host |
| --no-fetch-data | ROUTERDC_FETCH_DATA=0 | on: an empty data directory is filled in the background from ROUTERDC_DATA_URL (default: the official repository) |
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from routerdc.inference import ENGINE_CHOICES
from routerdc.limits import BOUNDS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = "checkpoints/routerdc-minilm"


def _env(*names: str, default: str | None = None) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return default


@dataclass(frozen=True)
class Settings:
    checkpoint: str = DEFAULT_CHECKPOINT
    data_dir: str | None = None
    models_config: str | None = None
    launch_llms: bool = False
    host: str = "127.0.0.1"
    port: int = 7860
    cache_dir: str | None = None
    runs_dir: str = "runs/app"
    map_method: str = "umap"
    map_per_set: int = 250
    max_rows: int = 0
    torch_threads: int = 1
    engine: str = "auto"  # routerdc.load_router's engine argument (routerdc.inference.ENGINE_CHOICES)
    data_files: tuple[str, ...] | None = None  # None: every shipped score file
    max_file_size: int = BOUNDS.max_upload_bytes  # Gradio refuses bigger uploads (413) before storing them
    concurrency: int = 2
    queue_size: int = 64
    eval_max_per_task: int = 500
    extra_checkpoints: tuple[str, ...] = field(default=())
    discover: bool = True  # list the routers under checkpoints/, runs/ and the runs dir
    api_keys: tuple[str, ...] = ()  # keys for the routed API at /v1 (and its /docs, /openapi.json)
    allow_unauthenticated: bool = False  # mount /v1 without a key on a non-loopback host
    fetch_data: bool = True  # download the score data in the background when the data directory is empty

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_CHOICES:
            raise ValueError(f"engine must be one of {ENGINE_CHOICES}, got {self.engine!r}")

    def resolve(self, path: str) -> Path:
        """A path relative to the project root unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else ROOT / p

    @property
    def runs_path(self) -> Path:
        return self.resolve(self.runs_dir)

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        s = cls(
            checkpoint=_env("ROUTERDC_CHECKPOINT", default=DEFAULT_CHECKPOINT),  # type: ignore[arg-type]
            data_dir=_env("ROUTERDC_DATA"),
            models_config=_env("ROUTERDC_MODELS_CONFIG"),
            launch_llms=_env("ROUTERDC_LAUNCH_LLMS", default="0") not in ("0", "", "false", "no"),
            host=_env("ROUTERDC_HOST", "GRADIO_SERVER_NAME", default="127.0.0.1"),  # type: ignore[arg-type]
            port=int(_env("ROUTERDC_PORT", "GRADIO_SERVER_PORT", default="7860")),  # type: ignore[arg-type]
            cache_dir=_env("ROUTERDC_CACHE"),
            runs_dir=_env("ROUTERDC_RUNS", default="runs/app"),  # type: ignore[arg-type]
            map_method=_env("ROUTERDC_MAP_METHOD", default="umap"),  # type: ignore[arg-type]
            map_per_set=int(_env("ROUTERDC_MAP_PER_SET", default="250")),  # type: ignore[arg-type]
            max_rows=int(_env("ROUTERDC_MAX_ROWS", default="0")),  # type: ignore[arg-type]
            torch_threads=int(_env("ROUTERDC_TORCH_THREADS", default="1")),  # type: ignore[arg-type]
            engine=_env("ROUTERDC_ENGINE", default="auto"),  # type: ignore[arg-type]
            api_keys=_keys(_env("ROUTERDC_API_KEY")),
            allow_unauthenticated=_env("ROUTERDC_ALLOW_UNAUTHENTICATED", default="0") not in ("0", "", "false", "no"),
            fetch_data=_env("ROUTERDC_FETCH_DATA", default="1") not in ("0", "false", "no"),
        )
        return replace(s, **overrides)  # type: ignore[arg-type]


def _keys(value: str | Sequence[str] | None) -> tuple[str, ...]:
    from routerdc.serving.auth import parse_keys

    return parse_keys(value)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Settings from the environment, overridden by command-line options."""
    base = Settings.from_env()
    p = argparse.ArgumentParser(prog="app.py", description="RouterDC demo (Gradio).")
    p.add_argument("--checkpoint", default=base.checkpoint, help="router folder (default: %(default)s)")
    p.add_argument("--data-dir", default=base.data_dir, help="score-data directory")
    p.add_argument("--models-config", default=base.models_config,
                   help="models config of the candidate LLMs (answers are streamed from them, and the routed "
                        "OpenAI-compatible API is served at /v1)")
    p.add_argument("--launch-llms", action="store_true", default=base.launch_llms,
                   help="also start a vLLM server per 'vllm' candidate of the models config (and stop them on exit)")
    p.add_argument("--host", default=base.host)
    p.add_argument("--port", type=int, default=base.port)
    p.add_argument("--cache-dir", default=base.cache_dir)
    p.add_argument("--runs-dir", default=base.runs_dir)
    p.add_argument("--map-method", choices=("umap", "pca"), default=base.map_method)
    p.add_argument("--map-per-set", type=int, default=base.map_per_set)
    p.add_argument("--max-rows", type=int, default=base.max_rows)
    p.add_argument("--torch-threads", type=int, default=base.torch_threads)
    p.add_argument("--engine", choices=ENGINE_CHOICES, default=base.engine,
                   help="the inference layer's engine; auto: the fastest on this machine that routes like torch "
                        "fp32 (measured once after the map, then cached; an ONNX pick starts without torch)")
    p.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="key for the routed API at /v1 (repeatable or comma-separated; default: $ROUTERDC_API_KEY)")
    p.add_argument("--allow-unauthenticated", action="store_true", default=base.allow_unauthenticated,
                   help="mount the routed API without a key on a non-loopback --host")
    p.add_argument("--no-fetch-data", dest="fetch_data", action="store_false", default=base.fetch_data,
                   help="do not download the score data when the data directory is empty")
    p.add_argument("--prepare", action="store_true",
                   help="compute and cache the default router's map and ONNX form, then exit")
    p.add_argument("--ship-map", action="store_true",
                   help="with --prepare: also write the map into the router's folder (maps/, ~2 MB), so that it "
                        "ships with the router and a fresh clone starts with it")
    a = p.parse_args(argv)
    s = replace(base, checkpoint=a.checkpoint, data_dir=a.data_dir, models_config=a.models_config,
                launch_llms=a.launch_llms,
                host=a.host, port=a.port, cache_dir=a.cache_dir, runs_dir=a.runs_dir,
                map_method=a.map_method, map_per_set=a.map_per_set, max_rows=a.max_rows,
                torch_threads=a.torch_threads, engine=a.engine, fetch_data=a.fetch_data,
                api_keys=_keys(a.api_key) or base.api_keys, allow_unauthenticated=a.allow_unauthenticated)
    return s, a
