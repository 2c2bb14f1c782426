"""The PyTorch side of the benchmarks: a child process that the benchmark drives round by round.

    python lm/bench/torch_peer.py train  --weights DIR --tokens FILE.npy --mode compiled --threads 2 ...
    python lm/bench/torch_peer.py decode --weights DIR --prompts FILE.npy --new_tokens 256 --mode static_compiled
    python lm/bench/torch_peer.py rollout --weights DIR --prompts FILE.npy --new_tokens 128 --samples 8 --mode default

Standalone on purpose (imports torch, never JAX or `lm`), so that the two sides
share no threads, allocator or import-time state. `--weights` is a Hugging Face
GPT-2 folder that `lm.hf.export_checkpoint` wrote from our parameters, so both
sides start from the same weights and the same batch: same work, checked by the
parent from the losses (train), the greedy tokens (decode) or the shape of the
sampled tokens (rollout: random, so only the amount of work can be compared).

train modes (a nanoGPT-style step written against the same checkpoint layout):
  compiled  torch.compile of the model, AdamW(fused=True): how nanoGPT and the
            transformers Trainer run on a current PyTorch
  eager     no compilation, AdamW's default (foreach) implementation
decode modes (transformers `generate`, greedy, SDPA attention):
  static_compiled  cache_implementation="static" and torch.compile(model.forward),
                   as the transformers "optimizing inference" guide does
  default          the dynamic cache, eager
rollout: the same two modes, sampling instead (do_sample, temperature 1, top_k=0
  and top_p=1 so the whole softmax is sampled as on our side; transformers'
  own default would be top-k 50), num_return_sequences=--samples per prompt,
  min_new_tokens = max_new_tokens so every row makes exactly --new_tokens tokens.

Protocol: one JSON object per line on stdout. After set-up and warm-up the child
prints {"ready": true, ...settings, warm-up losses or tokens}; then, for each
line "run <n>" read on stdin, it runs n steps (train) or n generate calls
(decode, rollout) and prints {"times": [...seconds...], ...}. EOF on stdin ends it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _reply(obj: dict) -> None:
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


class Block(nn.Module):
  def __init__(self, d: int, heads: int, d_ff: int, eps: float):
    super().__init__()
    self.heads = heads
    self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
    self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
    self.c_fc, self.mlp_proj = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

  def forward(self, x):
    B, T, C = x.shape
    q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
    q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
    return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
  """GPT-2 (learned positions, LayerNorm, tanh-GELU MLP, tied head), sized by an HF config.json."""

  def __init__(self, cfg: dict):
    super().__init__()
    d, eps = cfg["n_embd"], cfg.get("layer_norm_epsilon", 1e-5)
    d_ff = cfg.get("n_inner") or 4 * d
    self.wte, self.wpe = nn.Embedding(cfg["vocab_size"], d), nn.Embedding(cfg["n_positions"], d)
    self.h = nn.ModuleList(Block(d, cfg["n_head"], d_ff, eps) for _ in range(cfg["n_layer"]))
    self.ln_f = nn.LayerNorm(d, eps=eps)

  def forward(self, idx, targets):
    x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
    for block in self.h:
      x = block(x)
    logits = F.linear(self.ln_f(x), self.wte.weight)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

  def load_hf(self, tensors: dict[str, torch.Tensor]) -> None:
    """transformers' GPT-2 names; its Conv1D weights are (in, out), nn.Linear's (out, in)."""
    ours = {"wte.weight": "transformer.wte.weight", "wpe.weight": "transformer.wpe.weight",
            "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"}
    for i in range(len(self.h)):
      for mine, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2"), ("c_attn", "attn.c_attn"),
                           ("attn_proj", "attn.c_proj"), ("c_fc", "mlp.c_fc"), ("mlp_proj", "mlp.c_proj")):
        for leaf in ("weight", "bias"):
          ours[f"h.{i}.{mine}.{leaf}"] = f"transformer.h.{i}.{theirs}.{leaf}"
    state = {}
    for mine, theirs in ours.items():
      t = tensors[theirs]
      state[mine] = t.T.contiguous() if t.ndim == 2 and mine.startswith("h.") else t
    self.load_state_dict(state, strict=True)


def train_peer(a) -> None:
  from safetensors.torch import load_file
  with open(os.path.join(a.weights, "config.json")) as f:
    cfg = json.load(f)
  model = GPT(cfg)
  model.load_hf(load_file(os.path.join(a.weights, "model.safetensors")))
  tokens = torch.from_numpy(np.load(a.tokens).astype(np.int64))
  x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
  # Weight decay as ours (lm/train.py:decay_mask): matrices only, not biases or norm scales.
  decay = [p for p in model.parameters() if p.ndim >= 2]
  other = [p for p in model.parameters() if p.ndim < 2]
  fused = a.mode == "compiled"
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                           {"params": other, "weight_decay": 0.0}],
                          lr=a.lr, betas=(a.b1, a.b2), eps=a.eps, fused=fused)
  step_model = torch.compile(model) if a.mode == "compiled" else model

  def step() -> float:
    loss = step_model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if a.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip_norm)
    opt.step()
    return float(loss)  # synchronises; the step's work is done when this returns

  t = time.perf_counter()
  losses = [step() for _ in range(a.warmup)]
  _reply({"ready": True, "warmup_s": time.perf_counter() - t, "warmup_losses": losses,
          "settings": settings(a, optimizer=f"AdamW(fused={fused})")})
  serve(lambda: step())


def decode_peer(a) -> None:
  """decode (greedy) and rollout (sampled, --samples rows per prompt): one generate call per step."""
  import transformers
  model = transformers.AutoModelForCausalLM.from_pretrained(a.weights, attn_implementation="sdpa").eval()
  ids = torch.from_numpy(np.load(a.prompts).astype(np.int64))
  kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                do_sample=False, pad_token_id=0, use_cache=True)
  sampled = {}
  if a.kind == "rollout":
    # top_k=0 spelled out: transformers would otherwise fill in its default top-k of 50.
    sampled = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=a.samples)
    kwargs.update(sampled)
  if a.mode == "static_compiled":
    kwargs["cache_implementation"] = "static"
    model.forward = torch.compile(model.forward, fullgraph=True)

  def generate() -> np.ndarray:
    with torch.inference_mode():
      return model.generate(ids, **kwargs)[:, ids.shape[1]:].numpy()

  t = time.perf_counter()
  tokens = generate()
  for _ in range(max(a.warmup - 1, 0)):
    generate()
  _reply({"ready": True, "warmup_s": time.perf_counter() - t, "tokens": tokens.tolist(),
          "settings": settings(a, cache="static" if a.mode == "static_compiled" else "dynamic",
                               attention="sdpa", transformers=transformers.__version__, **sampled)})
  serve(generate)


def settings(a, **extra) -> dict:
  return {"mode": a.mode, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "torch_interop_threads": torch.get_num_interop_threads(),
          "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
          # OpenMP's busy-waiting makes torch many times slower on a loaded machine; PASSIVE avoids it.
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), **extra}


def serve(work) -> None:
  for line in sys.stdin:
    cmd = line.split()
    if not cmd:
      continue
    if cmd[0] != "run" or len(cmd) != 2:
      _reply({"error": f"unknown command {line.strip()!r}"})
      continue
    times, last = [], None
    for _ in range(int(cmd[1])):
      t = time.perf_counter()
      last = work()
      times.append(time.perf_counter() - t)
    _reply({"times": times, **({"loss": last} if isinstance(last, float) else {})})


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("kind", choices=("train", "decode", "rollout"))
  p.add_argument("--weights", required=True, help="HF GPT-2 folder (config.json + model.safetensors)")
  p.add_argument("--mode", required=True, choices=("compiled", "eager", "static_compiled", "default"))
  p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps / generate calls before 'ready'")
  p.add_argument("--tokens", help="train: (batch, seq_len + 1) int .npy")
  for name, default in (("lr", 1e-3), ("b1", 0.9), ("b2", 0.999), ("eps", 1e-8), ("weight_decay", 0.01),
                        ("clip_norm", 0.0)):
    p.add_argument(f"--{name}", type=float, default=default)
  p.add_argument("--prompts", help="decode, rollout: (batch, prompt_len) int .npy")
  p.add_argument("--new_tokens", type=int, default=0)
  p.add_argument("--samples", type=int, default=1, help="rollout: sequences sampled per prompt")
  a = p.parse_args(argv)
  if a.threads > 0:
    torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  train_peer(a) if a.kind == "train" else decode_peer(a)


if __name__ == "__main__":
  main()
