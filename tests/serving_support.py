"""Helpers of the serving tests: tiny random-weight Llama models, a router over them, a server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TINY_CACHE = ROOT / ".cache" / "tiny-llms" / "v2"  # git-ignored (.cache/)
TINY_NAMES = ("tiny-a", "tiny-b")

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

_WORDS = ("the a router model answer question math code python function number prime list sum value "
          "large small fast slow query token text data train test score cost chat user assistant system "
          "red green blue one two three four five six seven eight nine ten hello world why how what").split()


def _sentences(n: int = 400, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) + rng.choice(".?!") for _ in range(n)]


def build_tiny_llm(folder: Path, seed: int) -> Path:
    """A random-weight Llama (2 layers, hidden 64; head_dim 32, as vLLM's CPU attention rejects 8) with
    a BPE tokenizer trained here (~0.5 MB in all). It never emits EOS as a stop (eos_token_id unset in its generation config), so answers run to max_tokens."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (folder / "config.json").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_sentences(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      bos_token_id=fast.bos_token_id, eos_token_id=None, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = None
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    tmp.replace(folder) if not folder.exists() else None
    return folder


def tiny_llms() -> dict[str, Path]:
    TINY_CACHE.mkdir(parents=True, exist_ok=True)
    return {name: build_tiny_llm(TINY_CACHE / name, seed=i) for i, name in enumerate(TINY_NAMES)}


def build_router(folder: Path, llm_names) -> Path:
    """An untrained router (real MiniLM encoder) over ``llm_names``."""
    from routerdc.model.router import RouterDC

    if not (folder / "config.json").exists():
        RouterDC.build(list(llm_names)).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, models: list[dict], **top) -> Path:
    path.write_text(json.dumps({"models": models, **top}, indent=2), encoding="utf-8")
    return path


class ServerProcess:
    """``python -m routerdc serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, checkpoint: Path, models_config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "routerdc", "serve", "--checkpoint", str(checkpoint), "--models-config",
             str(models_config), "--host", "127.0.0.1", "--port", str(self.port), "--preload",
             "--log-level", "warning", "--engine", "torch"], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not healthy in 120 s:\n{log.read_text()}")

    def active(self) -> int:
        return httpx.get(self.url + "/v1/routerdc/status", timeout=5).json()["active"]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
