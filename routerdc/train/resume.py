"""The resume state of a training run: what ``train --resume`` continues from.

It lives beside the router, in ``<output_dir>.resume/`` (never inside the router folder: a shipped
router carries no optimizer state), and is written atomically as a whole folder
(:func:`routerdc.io.atomic_dir`), so a kill halfway leaves the previous state or the new one:

    state.json            format, version, step, best step/score/metrics, the score the run had to
                          beat, history, the recipe, a fingerprint of the data, the optimizer's
                          non-tensor state, the sampler's position, and the list of tensors
    tensors.safetensors   the current (not the best) weights in fp32 (``model.*``; without the
                          encoder when it is frozen), AdamW's moments and steps (``optim.*``), the
                          RNG states (``rng.gen``: the generator of the batch sampler and of the
                          losses; ``rng.torch``: the global one, used by dropout; ``rng.cuda.<i>``)
                          and the sampler's current epoch (``sampler.epoch``)

Tensors are only ever read from safetensors and everything else from JSON (nothing is unpickled).
The trainer writes it at every evaluation step and when cancelled, and removes it when a run
finishes all its steps. Numpy's RNG is not part of it: numpy draws only before the loop (the
validation split, the evaluation rows, k-means), from the seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from routerdc.io import atomic_dir, fsync_dir
from routerdc.train.config import TrainConfig

FORMAT = "routerdc-resume"
VERSION = 1
STATE_NAME = "state.json"
TENSORS_NAME = "tensors.safetensors"
# Recipe fields a resumed run may change: none of them changes the training trajectory (``steps``
# may only grow, to extend a run).
RESUMABLE_CHANGES = frozenset({"steps", "eval_every", "device", "cache_dir", "novelty_quantile"})

__all__ = ["FORMAT", "RESUMABLE_CHANGES", "ResumeError", "ResumeState", "VERSION", "check_recipe",
           "data_fingerprint", "flatten_optimizer", "has_state", "load_state", "model_weights", "open_state",
           "remove_state", "restore", "resume_dir", "rng_states", "save_state", "start_afresh",
           "unflatten_optimizer"]


class ResumeError(ValueError):
    """No resume state, a malformed or foreign one, or one that does not fit this run."""


def resume_dir(output_dir: str | Path) -> Path:
    """Where the resume state of a run writing ``output_dir`` lives: ``<output_dir>.resume``."""
    out = Path(output_dir)
    return out.with_name(out.name + ".resume")


def has_state(output_dir: str | Path) -> bool:
    """Whether a run writing ``output_dir`` left a resume state."""
    return (resume_dir(output_dir) / STATE_NAME).is_file()


@dataclass
class ResumeState:
    """Everything needed to continue a run after ``step``."""

    step: int
    recipe: dict[str, Any]
    data: str  # data_fingerprint() of the run's data
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    rng: dict[str, torch.Tensor]  # "gen", "torch", "cuda.<i>"
    sampler_epoch: np.ndarray | None
    sampler_given: int
    best_step: int | None = None
    best_score: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    baseline: float | None = None  # the score of the router that was in output_dir when the run began
    history: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------- the optimizer, flattened
def flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torch optimizer ``state_dict`` as named tensors (``optim.<param id>.<key>``) and a JSON
    description (the param groups, and the per-parameter values that are not tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict["state"].items():
        desc: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                name = f"optim.{int(pid)}.{key}"
                tensors[name] = value.detach().cpu().clone().contiguous()
                desc[key] = {"tensor": name}
            else:
                desc[key] = {"value": _jsonable(value, f"optimizer state {pid}.{key}")}
        per_param[str(int(pid))] = desc
    groups = [{k: _jsonable(v, f"param group {k}") for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"state": per_param, "param_groups": groups}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], desc: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer`; KeyError/TypeError/ValueError when malformed."""
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in desc["state"].items():
        state[int(pid)] = {key: tensors[v["tensor"]] if "tensor" in v else v["value"] for key, v in entry.items()}
    groups = []
    for g in desc["param_groups"]:
        g = dict(g)
        if "betas" in g:  # a tuple, turned into a list by JSON
            g["betas"] = tuple(g["betas"])
        if not isinstance(g.get("params"), list):
            raise ValueError("a param group without its parameter list")
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _jsonable(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    raise TypeError(f"cannot store {what} ({type(value).__name__}) in the resume state")


# ---------------------------------------------------------------------- fingerprints and checks
def data_fingerprint(llms: Sequence[str], parts: Sequence[tuple[str, Sequence[str], np.ndarray]]) -> str:
    """A sha256 of the LLMs and of each ``(name, queries, scores)`` part (the training rows as
    batched, the groups, the evaluation rows): a resumed run must see the same data."""
    h = hashlib.sha256(json.dumps(list(llms)).encode())
    for name, queries, array in parts:
        h.update(name.encode() + b"\0" + "\0".join(queries).encode() + b"\0")
        arr = np.ascontiguousarray(array)
        h.update(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def _normal(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(d)))


def check_recipe(state: ResumeState, config: TrainConfig, folder: Path) -> None:
    """ResumeError naming the fields where ``config`` differs from the state's recipe (only
    :data:`RESUMABLE_CHANGES` may), or when ``steps`` leaves nothing to do."""
    given = _normal(config.to_dict())
    saved = state.recipe
    differ = sorted(k for k in set(given) | set(saved) if k not in RESUMABLE_CHANGES and given.get(k) != saved.get(k))
    if differ:
        details = "; ".join(f"{k}: {saved.get(k)!r} in the state, {given.get(k)!r} now" for k in differ)
        raise ResumeError(f"{folder}: the recipe differs from the one of the run to resume ({details}); only "
                          f"{', '.join(sorted(RESUMABLE_CHANGES))} may change")
    if config.steps <= state.step:
        raise ResumeError(f"{folder}: the run stopped after step {state.step}, so steps={config.steps} leaves nothing "
                          f"to do; pass a larger --steps to extend it")


# ---------------------------------------------------------------------- capturing and restoring
def model_weights(model: torch.nn.Module, *, include_encoder: bool) -> dict[str, torch.Tensor]:
    """The model's state dict to keep (a frozen encoder is rebuilt from its reference instead)."""
    return {k: v for k, v in model.state_dict().items() if include_encoder or not k.startswith("encoder.")}


def rng_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The states of ``generator``, of torch's global CPU generator and, on CUDA, of the GPUs'."""
    out = {"gen": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return out


def restore(state: ResumeState, folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator, sampler: Any, include_encoder: bool) -> None:
    """Put ``state`` into the freshly built model, optimizer, generators and sampler; ResumeError
    (naming ``folder``) when it does not fit them (other weights, shapes or parameter groups)."""
    expected = model_weights(model, include_encoder=include_encoder)
    missing, unexpected = sorted(set(expected) - set(state.model)), sorted(set(state.model) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state.model)
                   if tuple(expected[k].shape) != tuple(state.model[k].shape))
    if missing or unexpected or wrong:
        raise ResumeError(f"{folder}: the saved weights do not fit this model: missing {missing[:5]}, unexpected "
                          f"{unexpected[:5]}, other shapes {[(k, list(state.model[k].shape)) for k in wrong[:5]]}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    try:
        groups = state.optimizer["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
            raise ValueError(f"parameter groups of sizes {[len(g['params']) for g in groups]}, this run has "
                             f"{[len(g['params']) for g in optimizer.param_groups]}")
        ids = [i for g in groups for i in g["params"]]
        for pid, entry in state.optimizer["state"].items():
            shape = tuple(params[ids.index(pid)].shape)
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shape:
                    raise ValueError(f"{key} of parameter {pid} has shape {list(value.shape)}, the parameter "
                                     f"{list(shape)}")
        with torch.no_grad():
            model.load_state_dict(state.model, strict=False)
        optimizer.load_state_dict(state.optimizer)
        sampler.restore(state.sampler_epoch, state.sampler_given)
        generator.set_state(state.rng["gen"])
        torch.set_rng_state(state.rng["torch"])
        cuda = [state.rng[k] for k in sorted((k for k in state.rng if k.startswith("cuda.")),
                                             key=lambda k: int(k.split(".")[1]))]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ResumeError(f"{folder}: the resume state does not fit this run ({exc})") from None


# ---------------------------------------------------------------------- saving and loading
def save_state(folder: str | Path, state: ResumeState) -> Path:
    """Write ``state`` to ``folder`` atomically (a temporary folder beside it, then a rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state.model.items():
        t = t.detach().cpu()
        tensors[f"model.{name}"] = (t.float() if t.is_floating_point() else t).clone().contiguous()
    opt_tensors, opt_desc = flatten_optimizer(state.optimizer)
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v.detach().cpu().clone().contiguous() for k, v in state.rng.items()})
    if state.sampler_epoch is not None:
        tensors["sampler.epoch"] = torch.as_tensor(np.ascontiguousarray(state.sampler_epoch, dtype=np.int64))
    doc = {
        "format": FORMAT, "version": VERSION, "step": state.step,
        "best_step": state.best_step, "best_score": state.best_score, "best_metrics": state.best_metrics,
        "baseline": state.baseline, "recipe": _normal(state.recipe), "data": state.data,
        "optimizer": opt_desc, "rng": sorted(state.rng), "sampler": {"given": state.sampler_given},
        "model": sorted(state.model),
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in sorted(tensors.items())},
        "history": state.history,
    }
    text = json.dumps(doc, indent=1)
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / TENSORS_NAME), metadata={"format": "pt", "routerdc": FORMAT})
        (tmp / STATE_NAME).write_text(text, encoding="utf-8")
    return folder


def load_state(folder: str | Path) -> ResumeState:
    """Read a state written by :func:`save_state`; :class:`ResumeError` (naming ``folder`` and what
    is wrong) when there is none, or it is malformed, foreign, or of an unknown version."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / STATE_NAME
    if not path.is_file():
        what = "holds no state.json" if folder.exists() else "does not exist"
        raise ResumeError(f"nothing to resume: {folder} {what} (a run leaves its resume state there when it is "
                          "cancelled or stopped; one that finished all its steps removes it)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResumeError(f"{path}: unreadable resume state ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ResumeError(f"{path}: not a RouterDC resume state (format {found!r})")
    if doc.get("version") != VERSION:
        raise ResumeError(f"{path}: resume state version {doc.get('version')!r}; this RouterDC reads version {VERSION}")
    try:
        tensors = load_file(str(folder / TENSORS_NAME))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ResumeError(f"{folder / TENSORS_NAME}: unreadable tensors ({exc})") from None
    try:
        listed = doc["tensors"]
        missing = sorted(set(listed) - set(tensors))
        unexpected = sorted(set(tensors) - set(listed))
        if missing or unexpected:
            raise ValueError(f"the tensors do not match state.json: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, spec in listed.items():
            t = tensors[name]
            if list(t.shape) != spec["shape"] or str(t.dtype).replace("torch.", "") != spec["dtype"]:
                raise ValueError(f"tensor {name} is {str(t.dtype)} {list(t.shape)}, state.json says {spec}")
        step = doc["step"]
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step {step!r}")
        given = doc["sampler"]["given"]
        if not isinstance(given, int):
            raise ValueError(f"sampler position {given!r}")
        state = ResumeState(
            step=step, recipe=dict(doc["recipe"]), data=str(doc["data"]),
            model={k: tensors[f"model.{k}"] for k in doc["model"]},
            optimizer=unflatten_optimizer(tensors, doc["optimizer"]),
            rng={k: tensors[f"rng.{k}"] for k in doc["rng"]},
            sampler_epoch=tensors["sampler.epoch"].numpy() if "sampler.epoch" in tensors else None,
            sampler_given=given, best_step=doc["best_step"], best_score=doc["best_score"],
            best_metrics=dict(doc["best_metrics"]), baseline=doc["baseline"], history=list(doc["history"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ResumeError(f"{folder}: malformed resume state ({detail})") from None
    if "gen" not in state.rng:
        raise ResumeError(f"{folder}: malformed resume state (no generator state rng.gen)")
    return state


def open_state(config: TrainConfig) -> ResumeState:
    """The state to continue ``config``'s run from: loaded, checked against the recipe
    (:func:`check_recipe`) and against the output folder (which must hold the best router it saved)."""
    out_dir = Path(config.output_dir)
    folder = resume_dir(out_dir)
    state = load_state(folder)
    check_recipe(state, config, folder)
    if state.best_step is not None and not (out_dir / "config.json").is_file():
        raise ResumeError(f"{folder}: the run saved its best router (step {state.best_step}) to {out_dir}, which holds "
                          "no router now; resume needs that folder as the run left it")
    return state


def start_afresh(output_dir: str | Path, *, overwrite: bool) -> None:
    """Before a new (not resumed) run into ``output_dir``: refuse when a stopped run left its state
    there, unless ``overwrite``, which discards it."""
    folder = resume_dir(output_dir)
    if not has_state(output_dir):
        return
    if not overwrite:
        raise ResumeError(f"{folder} holds the resume state of an earlier run: pass --resume to continue it, or "
                          "--overwrite to start afresh and discard it")
    remove_state(folder)


def remove_state(folder: str | Path) -> None:
    """Delete a resume state folder (nothing left to resume)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
        fsync_dir(folder.parent)
