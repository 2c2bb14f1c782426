"""SFT-step benchmark (kind 'sft_step' of experiments.bench): SFT beside pretraining, same shapes.

Builds two stages with the same model, optimizer and (batch, seq_len): the
pretraining step on plain causal rows, and the SFT step on rows of real
conversations packed best-fit with segment ids and restarting positions (or
padded, `data_layout`). They alternate for `rounds` rounds of `steps` timed steps;
SFT throughput counts only non-padding tokens, so the ratio is what a user
sees: tokens of conversation learned per second against tokens of text
pretrained per second. Padding fractions of both layouts are reported too.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from lm import loop, losses, sharding
from lm.bench import peer as peer_lib
from lm.data import conversations, sft
from lm.errors import MissingFile
from lm.tokenizer import ByteTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _timed(stage, batches: list, n: int, holder: dict) -> float:
  """Seconds for n steps, cycling through `batches` (already on the mesh)."""
  key = jax.random.key(0)
  t = time.perf_counter()
  for i in range(n):
    holder["state"], _ = stage.train_step(holder["state"], batches[i % len(batches)], key)
  jax.block_until_ready(holder["state"])
  return time.perf_counter() - t


def read_conversations(spec: str, seed: int) -> list:
  """'tasks': the tiny SFT mix (synthetic-world facts, arithmetic, spelling); else a ShareGPT JSON file."""
  if spec == "tasks":
    from lm import tasks
    return [ex.conversation() for name in ("world", "arithmetic", "spelling") for ex in tasks.get(name).examples("train", 1000, seed)]
  path = os.path.join(ROOT, spec)
  if not os.path.exists(path):
    raise MissingFile(f"config.conversations: no such file {path!r} (see ../shared/data/SOURCES.md)")
  return list(conversations.source("sharegpt", path))


def run(config) -> dict:
  attention = peer_lib.check_ran_as_configured(config.model)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  B, T = config.batch_size, config.seq_len
  tok = ByteTokenizer()
  convs = read_conversations(config.conversations, config.seed)
  rendered = sft.RenderedSet(convs, tok)
  layouts = {m: sft.SFTRows(rendered, T, m, config.seed) for m in ("pack", "pad")}
  rows = layouts[config.data_layout]
  # The SFT side steps through `steps` consecutive batches of the real stream (their padding
  # varies), the pretraining side through as many random-token batches without padding.
  sft_host = [b for _, b in zip(range(config.steps), iter(sft.dataset(rows, B, seed=config.seed)))]
  sft_tokens = sum(int((b["segment_ids"] > 0).sum()) for b in sft_host)

  rng = np.random.default_rng(config.seed)
  pre_host = []
  for _ in range(config.steps):
    text = rng.integers(0, config.model.vocab_size, (B, T + 1), dtype=np.int32)
    pre_host.append({"inputs": text[:, :-1], "targets": text[:, 1:], "loss_mask": np.ones((B, T), np.float32)})
  total = config.rounds * (config.steps + config.warmup_steps)
  stages, batches, holders = {}, {}, {}
  for name, host in (("pretrain", pre_host), ("sft", sft_host)):
    stages[name] = loop.build_stage(config.model, config.opt, total, mesh, rules, losses.next_token,
                                    micro_batch=B, seq_len=T)
    batches[name] = [sharding.host_batch_to_global(b, mesh) for b in host]
    holders[name] = {"state": stages[name].init(config.seed)}
    _timed(stages[name], batches[name], config.warmup_steps, holders[name])

  tps = {"pretrain": [], "sft": []}
  for r in range(config.rounds):
    for name in ("pretrain", "sft"):
      seconds = _timed(stages[name], batches[name], config.steps, holders[name])
      tps[name].append((B * T * config.steps if name == "pretrain" else sft_tokens) / seconds)
    print({"round": r, "pretrain_tokens_per_sec": round(tps["pretrain"][-1]),
           "sft_tokens_per_sec": round(tps["sft"][-1]), "ratio": round(tps["sft"][-1] / tps["pretrain"][-1], 3)},
          flush=True)
  ratios = [s / p for s, p in zip(tps["sft"], tps["pretrain"])]
  return {
      "pretrain_tokens_per_sec": float(np.median(tps["pretrain"])),
      "sft_tokens_per_sec": float(np.median(tps["sft"])),
      "sft_over_pretrain": float(np.median(ratios)), "ratio_per_round": ratios,
      "data_layout": config.data_layout, "conversations": config.conversations,
      "padding_fraction": {m: rows_.stats["padding_fraction"] for m, rows_ in layouts.items()},
      "sft_timed_padding_fraction": 1 - sft_tokens / (B * T * config.steps),
      "attention": attention, "machine": peer_lib.machine(),
      "num_devices": jax.device_count(), "batch_size": B, "seq_len": T,
  }
