"""Checkpoint files: safetensors weights plus a JSON config, written atomically.

Layout of a router folder::

    config.json                      routerdc config: router, encoder, recipe, metrics
    model.safetensors                 weights (or model-0000k-of-0000n.safetensors + index)
    encoder/                          the encoder's HF config and tokenizer files

Only safetensors are ever read; pickled files (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``,
``*.ckpt``) are refused. A folder is written to a temporary sibling and renamed into place, so
a crash or a cancel never leaves a half-written router where a good one was (the one
atomic-write path, :mod:`routerdc.io`, fsyncs files and folders around the renames).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from routerdc.io import atomic_dir, write_bytes

__all__ = ["atomic_dir", "write_json", "json_bytes", "read_config", "read_meta", "RouterMeta", "save_state_dict",
           "load_state_dict", "list_routers", "CheckpointError"]

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
FORMAT = "routerdc"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class CheckpointError(RuntimeError):
    """A router folder is missing, foreign, pickled, corrupt or incompatible."""


def json_bytes(obj: Any) -> bytes:
    """The exact bytes :func:`write_json` writes for ``obj``."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (:func:`routerdc.io.write_bytes`: fsync + rename)."""
    write_bytes(path, json_bytes(obj))


# The top-level keys of config.json that RouterMeta owns; any other key is kept, in order, in ``extra``.
_OWN = ("format", "format_version", "router", "encoder_weights", "dtype", "recipe", "metrics", "calibration")


@dataclass(frozen=True)
class RouterMeta:
    """The schema of a router folder's ``config.json``, and its only reader and writer.

    Attributes:
        router: the router config as a dict (:meth:`routerdc.routing.RouterConfig.to_dict`),
            holding the offsets ``llm_bias`` once calibrated and ``llm_cost`` once costed.
        encoder_weights: ``"included"`` (fine-tuned weights in the folder) or ``"reference"``
            (the pretrained ``router["encoder"]`` is loaded).
        dtype: the saved weights' dtype.
        recipe: the training config (:class:`routerdc.train.config.TrainConfig` as a dict, plus
            ``train_tasks``); the one recipe, from which ``train --config`` retrains the router.
        metrics: the selection metrics of the saved step.
        calibration: the record of the offsets' fit, or None.
        extra: other top-level entries (``costs``, ``fleet_changes``...), kept in order.
    """

    router: Mapping[str, Any]
    encoder_weights: str = "included"
    dtype: str = "float32"
    recipe: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.encoder_weights not in ("included", "reference"):
            raise CheckpointError(f"encoder_weights must be 'included' or 'reference', got {self.encoder_weights!r}")
        if not isinstance(self.router, Mapping) or "llm_names" not in self.router:
            raise CheckpointError("the router config is missing or has no llm_names")

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config.json") -> "RouterMeta":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a RouterDC config (no \"format\": \"{FORMAT}\")")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{source}: format version {d.get('format_version')} is newer than this routerdc "
                                  f"({FORMAT_VERSION}); upgrade routerdc")
        try:
            return cls(router=dict(d["router"]), encoder_weights=d.get("encoder_weights", "included"),
                       dtype=str(d.get("dtype", "float32")), recipe=dict(d.get("recipe") or {}),
                       metrics=dict(d.get("metrics") or {}), calibration=d.get("calibration"),
                       extra={k: v for k, v in d.items() if k not in _OWN})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: invalid router config ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "router": dict(self.router),
                             "encoder_weights": self.encoder_weights, "dtype": self.dtype,
                             "recipe": dict(self.recipe), "metrics": dict(self.metrics)}
        if self.calibration is not None:
            d["calibration"] = dict(self.calibration)
        d.update(self.extra)
        return d

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_dict())

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "RouterMeta":
        """The config of the router in ``folder``; :class:`CheckpointError` if it is not one."""
        return cls.from_dict(_load_json(folder), str(Path(folder) / CONFIG_NAME))

    def write(self, folder: str | os.PathLike, output: str | os.PathLike | None = None,
              files: Mapping[str, bytes | None] | None = None) -> Path:
        """Rewrite ``folder``'s config.json (atomically; the weights untouched), or with another
        ``output`` write a copy of the folder carrying this config, in one atomic step; ``files``
        as :func:`write_config`."""
        return write_config(folder, self.to_dict(), output, files)

    # ------------------------------------------------------------------ views and edits
    def router_config(self) -> Any:
        """The :class:`routerdc.routing.RouterConfig` (validated)."""
        from routerdc.routing import RouterConfig

        try:
            return RouterConfig.from_dict(self.router)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid router config ({exc})") from None

    @property
    def llm_names(self) -> tuple[str, ...]:
        return tuple(self.router["llm_names"])

    @property
    def included(self) -> bool:
        """Whether the encoder's (fine-tuned) weights are in the folder."""
        return self.encoder_weights == "included"

    def with_router(self, **changes: Any) -> "RouterMeta":
        """This config with router config fields changed (``llm_cost=...``); None removes one."""
        router = {**self.router, **changes}
        return replace(self, router={k: v for k, v in router.items() if v is not None})

    def with_offsets(self, bias: Sequence[float], record: Mapping[str, Any]) -> "RouterMeta":
        """Calibrated: the offsets b_t in the router config and the fit's record. A fitted
        temperature is dropped (it was fitted after other offsets): see :meth:`with_temperature`."""
        return replace(self.with_router(llm_bias=[float(b) for b in bias], calibrated_temperature=None),
                       calibration=dict(record))

    def with_temperature(self, temperature: float, record: Mapping[str, Any]) -> "RouterMeta":
        """The fitted temperature (``calibrated_temperature``), its record under ``calibration.temperature``."""
        return replace(self.with_router(calibrated_temperature=float(temperature)),
                       calibration={**(self.calibration or {}), "temperature": dict(record)})

    def without_offsets(self) -> "RouterMeta":
        """The paper's rule: no offsets, no fitted temperature, no novelty fallback and no calibration
        record (a folder written with it should drop ``novelty.safetensors``)."""
        return replace(self.with_router(llm_bias=None, calibrated_temperature=None, novelty_threshold=None,
                                        llm_prior=None), calibration=None)

    def with_novelty(self, threshold: float, prior: Sequence[float], record: Mapping[str, Any]) -> "RouterMeta":
        """The novelty fallback (:mod:`routerdc.novelty`): its threshold and prior in the router config,
        its record under ``calibration.novelty``; the bank goes beside, in ``novelty.safetensors``."""
        return replace(self.with_router(novelty_threshold=float(threshold), llm_prior=[float(p) for p in prior]),
                       calibration={**(self.calibration or {}), "novelty": dict(record)})

    def without_novelty(self) -> "RouterMeta":
        calibration = None if self.calibration is None else {k: v for k, v in self.calibration.items()
                                                              if k != "novelty"}
        return replace(self.with_router(novelty_threshold=None, llm_prior=None), calibration=calibration)

    def with_extra(self, **entries: Any) -> "RouterMeta":
        return replace(self, extra={**self.extra, **entries})

    def embedding_bytes(self) -> bytes:
        """This config without what changes no embedding (the offsets, the fitted temperature, the
        novelty fallback and their record, the costs):
        the bytes that content keys of cached embeddings and maps are taken over, so that a router and
        its calibrated or costed copy share them."""
        stripped = self.without_offsets().with_router(llm_cost=None, novelty_threshold=None, llm_prior=None)
        recipe = {k: v for k, v in self.recipe.items() if k != "novelty_quantile"}  # the fallback's recipe
        return replace(stripped, recipe=recipe, extra={k: v for k, v in self.extra.items() if k != "costs"}).to_bytes()


def read_meta(folder: str | os.PathLike) -> RouterMeta:
    """:meth:`RouterMeta.read`."""
    return RouterMeta.read(folder)


def write_config(folder: str | os.PathLike, meta: dict[str, Any], output: str | os.PathLike | None = None,
                 files: Mapping[str, bytes | None] | None = None) -> Path:
    """Give the router in ``folder`` the config ``meta``: rewrite its ``config.json`` in place
    (atomically; the weights untouched) or, with another ``output``, write a copy of the folder with
    the new config there in one atomic step. ``files``: more files to write (bytes) or remove
    (None) in the same step; in place, the folder is then rewritten as a whole (copied and swapped),
    so the config and those files change together. Returns where the router now is."""
    import shutil

    folder = Path(folder)
    out = Path(output) if output is not None else folder
    if out.resolve() == folder.resolve() and not files:
        write_json(folder / CONFIG_NAME, meta)
        return out
    with atomic_dir(out) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        write_json(tmp / CONFIG_NAME, meta)
        for name, data in (files or {}).items():
            if data is None:
                (tmp / name).unlink(missing_ok=True)
            else:
                write_bytes(tmp / name, data)
    return out


def _load_json(folder: str | os.PathLike) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    path = folder / CONFIG_NAME
    if not path.exists():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found pickled files {pickles}; they are never loaded)" if pickles else ""
        raise CheckpointError(f"{folder}: not a RouterDC checkpoint, {CONFIG_NAME} is missing{hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable config ({exc})") from None


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The routerdc config of ``folder`` as a plain dict (:meth:`RouterMeta.read`, then ``to_dict``);
    :class:`CheckpointError` if it is not a router folder."""
    return RouterMeta.read(folder).to_dict()


def save_state_dict(
    state: dict[str, "torch.Tensor"], folder: Path, *, dtype: "torch.dtype | None" = None,
    max_shard_size: int | str = "5GB",
) -> None:
    """Save tensors as safetensors (sharded above ``max_shard_size``), optionally cast to ``dtype``."""
    from huggingface_hub import save_torch_state_dict

    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_torch_state_dict(state, folder, max_shard_size=max_shard_size,
                          metadata={"format": "pt"})


def load_state_dict(folder: Path) -> dict[str, "torch.Tensor"]:
    """Read the safetensors weights of ``folder`` (single file or sharded). Never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if single.exists():
        files = [single]
    elif index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{index}: unreadable shard index ({exc})") from None
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{folder}: only pickled weights {pickles}; RouterDC loads safetensors only"
            )
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} (or sharded index) found")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.exists():
            raise CheckpointError(f"{f}: shard listed in the index is missing")
        try:
            state.update(load_file(f))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{f}: corrupt safetensors file ({exc})") from None
    return state


def list_routers(folder: str | os.PathLike, *, sweep: bool = True) -> list[Path]:
    """The router folders directly in ``folder``, newest first. Left-overs of killed writes
    (``.X.tmp-*``, ``.X.old-*``) are never listed; with ``sweep`` stale ones are removed first."""
    from routerdc.io import is_leftover, sweep_stale

    folder = Path(folder)
    if not folder.is_dir():
        return []
    if sweep:
        sweep_stale(folder)
    try:
        found = [p for p in folder.iterdir() if not is_leftover(p.name) and (p / CONFIG_NAME).exists()]
    except OSError:
        return []
    return sorted(found, key=lambda p: -p.stat().st_mtime)
