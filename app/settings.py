"""The app's settings: one table (:data:`OPTIONS`) gives each option its command-line flag, its
environment variables, its type and its help; ``Settings.from_env`` and ``parse_args`` both read
it, and README's configuration table lists the same rows (``python -c "import app.settings as s;
print(s.markdown_table())"``)."""

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
        """Settings from the environment variables of :data:`OPTIONS` (else their defaults), then ``overrides``."""
        values = {}
        for o in OPTIONS:
            raw = _env(*o.env)
            if raw is not None:
                values[o.field] = o.parse(raw)
        return replace(cls(**values), **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Option:
    """One setting: its :class:`Settings` field, flag, environment variables, kind and help."""

    field: str
    flag: str
    env: tuple[str, ...]
    kind: str  # "str", "int", "bool" (a flag that turns it on), "off" (a flag that turns it off), "keys"
    help: str
    choices: tuple[str, ...] | None = None
    default_text: str | None = None  # for the table, where the field's default needs words

    def parse(self, raw: str) -> object:
        if self.kind == "int":
            return int(raw)
        if self.kind in ("bool", "off"):
            return raw.strip().lower() not in ("0", "", "false", "no")
        if self.kind == "keys":
            return _keys(raw)
        return raw


OPTIONS: tuple[Option, ...] = (
    Option("checkpoint", "--checkpoint", ("ROUTERDC_CHECKPOINT",), "str", "router folder",
           default_text="checkpoints/routerdc-minilm (the shipped router)"),
    Option("data_dir", "--data-dir", ("ROUTERDC_DATA",), "str", "score-data directory",
           default_text="../shared/data beside the checkout"),
    Option("models_config", "--models-config", ("ROUTERDC_MODELS_CONFIG",), "str",
           "models config of the candidate LLMs (answers are streamed from them, and the routed OpenAI-compatible "
           "API is served at /v1)", default_text="none (no generation backend; answers only from recorded data)"),
    Option("launch_llms", "--launch-llms", ("ROUTERDC_LAUNCH_LLMS",), "bool",
           "also start a vLLM server per 'vllm' candidate of the models config (and stop them on exit; vLLM's venv: "
           "ROUTERDC_VLLM_PYTHON)", default_text="off"),
    Option("host", "--host", ("ROUTERDC_HOST", "GRADIO_SERVER_NAME"), "str", "address to serve on"),
    Option("port", "--port", ("ROUTERDC_PORT", "GRADIO_SERVER_PORT"), "int", "port to serve on"),
    Option("cache_dir", "--cache-dir", ("ROUTERDC_CACHE",), "str", "embeddings, maps and ONNX forms",
           default_text="~/.cache/routerdc"),
    Option("runs_dir", "--runs-dir", ("ROUTERDC_RUNS",), "str", "routers trained in the app"),
    Option("map_method", "--map-method", ("ROUTERDC_MAP_METHOD",), "str", "2-D map method (pca: no numba, for tests)",
           choices=("umap", "pca")),
    Option("map_per_set", "--map-per-set", ("ROUTERDC_MAP_PER_SET",), "int", "queries per data set on the map"),
    Option("max_rows", "--max-rows", ("ROUTERDC_MAX_ROWS",), "int",
           "rows of each data set (0 = all; a cap makes tests fast)"),
    Option("torch_threads", "--torch-threads", ("ROUTERDC_TORCH_THREADS",), "int",
           "torch threads (several threads contend badly on small CPUs)"),
    Option("engine", "--engine", ("ROUTERDC_ENGINE",), "str",
           "the inference layer's engine; auto: the fastest on this machine that routes like torch fp32 (measured "
           "once after the map, then cached; an ONNX pick starts without torch)", choices=ENGINE_CHOICES),
    Option("api_keys", "--api-key", ("ROUTERDC_API_KEY",), "keys",
           "key for the routed API at /v1 (repeatable or comma-separated)",
           default_text="none: the routed API (with a models config) is mounted only on a loopback --host"),
    Option("allow_unauthenticated", "--allow-unauthenticated", ("ROUTERDC_ALLOW_UNAUTHENTICATED",), "bool",
           "mount the routed API without a key on a non-loopback --host", default_text="off"),
    Option("fetch_data", "--no-fetch-data", ("ROUTERDC_FETCH_DATA",), "off",
           "do not download the score data when the data directory is empty (default: an empty data directory is "
           "filled in the background from ROUTERDC_DATA_URL, by default the official repository)", default_text="on"),
)


def markdown_table() -> str:
    """README's configuration table, from :data:`OPTIONS`."""
    base = Settings()
    rows = ["| option | environment variable | default |", "|---|---|---|"]
    for o in OPTIONS:
        default = o.default_text or str(getattr(base, o.field))
        rows.append(f"| {o.flag} | {', else '.join(o.env)} | {default} |")
    rows.append("| (no option) | ROUTERDC_DEVICE | cpu: the torch router's device (cuda on the GPU Space, with "
                "ROUTERDC_ENGINE=torch) |")
    return "\n".join(rows) + "\n"


def _keys(value: str | Sequence[str] | None) -> tuple[str, ...]:
    from routerdc.serving.auth import parse_keys

    return parse_keys(value)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Settings from the environment, overridden by command-line options (both from :data:`OPTIONS`)."""
    base = Settings.from_env()
    p = argparse.ArgumentParser(prog="app.py", description="RouterDC demo (Gradio).")
    for o in OPTIONS:
        default = getattr(base, o.field)
        if o.kind == "bool":
            p.add_argument(o.flag, dest=o.field, action="store_true", default=default, help=o.help)
        elif o.kind == "off":
            p.add_argument(o.flag, dest=o.field, action="store_false", default=default, help=o.help)
        elif o.kind == "keys":
            p.add_argument(o.flag, dest=o.field, action="append", default=None, metavar="KEY",
                           help=f"{o.help} (default: ${o.env[0]})")
        else:
            p.add_argument(o.flag, dest=o.field, type=int if o.kind == "int" else str, default=default,
                           choices=o.choices, help=f"{o.help} (default: %(default)s)")
    p.add_argument("--prepare", action="store_true",
                   help="compute and cache the default router's map and ONNX form, then exit")
    p.add_argument("--ship-map", action="store_true",
                   help="with --prepare: also write the map into the router's folder (maps/, ~2 MB), so that it "
                        "ships with the router and a fresh clone starts with it")
    a = p.parse_args(argv)
    values = {o.field: getattr(a, o.field) for o in OPTIONS if o.kind != "keys"}
    s = replace(base, **values, api_keys=_keys(a.api_keys) or base.api_keys)
    return s, a
