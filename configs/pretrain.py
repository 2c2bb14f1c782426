"""Pretraining a base model with next-token prediction.

Run on this CPU (2–3½ min on 2 idle cores, 7–8 min while other jobs share them;
validation loss ≈5.8 → ≈1.9 nats/byte-token):
  python -m experiments.pretrain --config=configs/pretrain.py:tiny --workdir=runs/tiny

The base model that post-training starts from (BPE shards of the synthetic
world's crawl + a little of the interpreter's docs; `bash launch/pipeline.sh`
runs the data chain, this, and SFT):
  python -m experiments.pretrain --config=configs/pretrain.py:world --workdir=runs/base \
      --config.data.path=runs/data/shards

Same code on accelerators (per-device memory is checked ahead of time in tests):
  python -m experiments.pretrain --config=configs/pretrain.py:gpt2_124m --workdir=gs://.../gpt2 \
      --config.data.path=/data/fineweb_edu_shards
  python -m experiments.pretrain --config=configs/pretrain.py:llama_1b --workdir=... --config.mesh.fsdp=-1 --config.mesh.data=1

Any key can be overridden: --config.train.steps=200 --config.model.dtype=bfloat16 ...
`get_config("tiny,runlocal")`-style extras are not used: shrink with overrides.
"""
from __future__ import annotations

import ml_collections

from lm.errors import UserError
from configs import base

ARGS = ("tiny", "llama_tiny", "world", "gpt2_124m", "llama_1b")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise UserError(f"configs/pretrain.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # parameter init and dropout-free step RNG
  c.model = base.model_config("tiny" if arg == "world" else arg)
  if arg in ("tiny", "llama_tiny", "world"):
    c.model.attention = base.CPU_ATTENTION
  c.mesh = base.mesh_config()
  c.sharding_rules = base.SHARDING_RULES  # logical axis → mesh axes

  c.data = ml_collections.ConfigDict()
  c.data.path = "default"         # 'default' (embedded corpus), a .txt/.jsonl/.parquet file or folder, or prepared shards
  c.data.text_field = "text"      # JSONL/Parquet field holding the document text
  c.data.tokenizer = "auto"       # auto (the shards' own, else byte) | byte | path to a saved tokenizer
  c.data.val_fraction = 0.05      # held-out share of documents (split by content hash)
  c.data.document_mask = False    # attend only within a packed document (positions restart at BOS)
  c.data.shuffle_seed = 0         # Grain shuffle seed (re-mixed each epoch)
  c.data.prefetch_threads = 2     # Grain read threads

  c.opt = base.optimizer_config(lr=3e-3 if arg in ("tiny", "llama_tiny", "world") else 6e-4)
  c.opt.warmup_steps = 50

  c.train = ml_collections.ConfigDict()
  c.train.steps = 500             # optimizer steps
  c.train.batch_size = 32         # global sequences per step (all hosts, all microbatches)
  c.train.grad_accum = 1          # microbatches per step (batch_size / grad_accum each)
  c.train.seq_len = 128           # tokens per row (≤ model.max_len)
  c.train.log_every = 25          # steps between metric lines
  c.train.eval_every = 125        # steps between held-out evaluations (and samples)
  c.train.eval_batches = 8        # held-out batches per evaluation
  c.train.ckpt_every = 125        # steps between checkpoints
  c.train.keep_checkpoints = 2    # newest checkpoints kept
  c.train.nonfinite = "stop"      # a NaN/Inf loss or gradient: "stop" (exit 2, last checkpoint kept) | "skip" (count it)
  c.train.async_checkpoint = True # write checkpoints in the background
  c.train.profile_steps = 0       # >0: jax.profiler trace of that many steps after the first log

  c.sample = ml_collections.ConfigDict()
  c.sample.prompts = ("The ", "In Python, ", "A list ")  # prompts continued at each evaluation
  c.sample.max_new_tokens = 96    # tokens generated per prompt
  c.sample.temperature = 0.8      # 0: greedy
  c.sample.top_k = 0              # 0: off

  if arg == "world":
    # The base model that post-training builds on: BPE shards of the synthetic world's crawl
    # (through the web pipeline) plus the embedded corpus (launch/pipeline.sh makes them).
    c.model.update(d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=1024)
    c.data.path = "runs/data/shards"
    c.data.document_mask = True
    # 560 steps (~35 passes over the 132k tokens of the world's shards): base + SFT + data steps in 13½–14 min on 2 quiet cores,
    # facts seen 8+ times 0.51 ± 0.08 after SFT over 3 seeds (620 steps: 0.58 ± 0.03, ~15¾ min; README)
    c.train.update(steps=560, seq_len=256, eval_every=280, ckpt_every=100)
    c.sample.prompts = ("The city of ", "In Python, ")
  elif arg == "gpt2_124m":
    c.opt.warmup_steps = 700
    c.train.update(steps=20000, batch_size=512, grad_accum=8, seq_len=1024, log_every=50,
                   eval_every=1000, ckpt_every=1000, eval_batches=20)
    c.model.update(dtype="bfloat16", remat="dots_no_batch", scan_layers=True, attention="auto")
    c.mesh = base.mesh_config(data=1, fsdp=-1)
  elif arg == "llama_1b":
    c.opt.update(warmup_steps=2000, schedule="wsd")
    c.train.update(steps=50000, batch_size=512, grad_accum=16, seq_len=2048, log_every=50,
                   eval_every=1000, ckpt_every=1000, eval_batches=20)
    c.model.update(dtype="bfloat16", remat="full", scan_layers=True, attention="auto")
    c.mesh = base.mesh_config(data=1, fsdp=-1)
  return c


def sweep_lr():
  """Learning-rate sweep: python -m launch.sweep --config=configs/pretrain.py:tiny --sweep=sweep_lr --workdir=runs/lr_sweep"""
  return [{"opt.lr": lr} for lr in (1e-3, 3e-3, 1e-2)]
