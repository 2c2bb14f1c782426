"""Reward model: the transformer with a scalar head, trained on k-way human rankings.

Tiny, on this CPU, from the SFT (or base) model of the synthetic-world chain
(`bash launch/pipeline.sh`, or configs/sft.py:tiny), on Anthropic HH-RLHF pairs
(2,312 pairs; a tenth of the prompts held out):
  python -m experiments.reward_model --config=configs/reward_model.py:tiny --workdir=runs/rm \
      --config.init_from.workdir=runs/sft
On the OpenAssistant ranked groups (208 rankings of 2-7 replies, 512 pairs):
  python -m experiments.reward_model --config=configs/reward_model.py:tiny --workdir=runs/rm_oasst \
      --config.init_from.workdir=runs/sft --config.data.kind=oasst
Expect the held-out loss to fall from log 2 = 0.693 and pairwise accuracy (chance 0.5) to
rise only a little at this size: measured numbers are in the report.md section
"Held-out rankings" and in the README.

Real scale: a reward model from Llama-3.2-1B-Instruct on the OpenAssistant rankings in the
model's own chat template, bfloat16, FSDP over every device; compile first (reads only
config.json; the dict is configs/hf_models.py:LLAMA_3_2_1B):
  python -m experiments.compile --config=configs/reward_model.py:llama32_1b --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Llama-3.2-1B-Instruct
  python -m experiments.reward_model --config=configs/reward_model.py:llama32_1b \
      --workdir=gs://.../rm_llama --config.init_from.hf_dir=/models/Llama-3.2-1B-Instruct

The architecture comes from `init_from` (keys left `None`); `model.head='score'`
replaces the source's LM head with a fresh scalar head (lm/reward_model.py).
`train.batch_size` counts rows = responses; whole rankings are packed into each
microbatch (lm/data/ranking_rows.py), so batch_size / grad_accum / hosts must be
at least the largest ranking (7 for OpenAssistant).
"""
from __future__ import annotations

import ml_collections

from configs import base

ARGS = ("tiny", "llama32_1b")
SHARED = "../shared/data/"
# data.path "" reads these (relative to the project root, as the other shared-data defaults).
DEFAULT_PATHS = {"hh": SHARED + "hh-rlhf-harmless-base-test.jsonl.gz",
                 "oasst": SHARED + "oasst2-ranked-trees.jsonl.gz"}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/reward_model.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # step RNG, the head's initialisation, packing order

  c.init_from = base.init_from_config()
  c.model = base.inherited_model_config(base.CPU_ATTENTION if arg == "tiny" else None)
  c.model.head = "score"          # the scalar head in place of the LM head (must stay 'score')
  c.mesh = base.mesh_config()
  c.sharding_rules = base.SHARDING_RULES

  c.data = ml_collections.ConfigDict()
  c.data.kind = "hh"              # hh (chosen/rejected pairs) | oasst (ranked reply groups) | ranked (JSONL rankings)
  c.data.path = ""                # the file ("": the shared copy for hh and oasst; ranked needs one)
  c.data.lang = ""                # oasst: keep trees in this language only ("": all)
  c.data.max_rankings = 0         # use the first N rankings of the file (0: all)
  c.data.val_fraction = 0.1       # held-out share of prompts (all rankings of a prompt on one side)
  c.data.chat_template = "own"    # own (lm/conversation.py) | model: the source tokenizer's template
  c.data.prefetch_threads = 2     # Grain read threads

  c.opt = base.optimizer_config(lr=1e-4)
  c.opt.warmup_steps = 10
  c.opt.weight_decay = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.steps = 150             # optimizer steps (HH: ~2.3 epochs at batch 32)
  c.train.batch_size = 32         # global rows (responses) per step
  c.train.grad_accum = 1          # microbatches per step (each holds whole rankings)
  c.train.seq_len = 256           # tokens per response row (prompt cut from the left beyond it)
  c.train.log_every = 10          # steps between metric lines
  c.train.eval_every = 50         # steps between held-out passes (and at step 0: the fresh head)
  c.train.ckpt_every = 50         # steps between checkpoints
  c.train.keep_checkpoints = 2    # newest checkpoints kept
  c.train.nonfinite = "stop"      # a NaN/Inf loss or gradient: "stop" (exit 2, last checkpoint kept) | "skip"
  c.train.async_checkpoint = True # write checkpoints in the background
  c.train.profile_steps = 0       # >0: jax.profiler trace of that many steps

  c.eval = ml_collections.ConfigDict()
  c.eval.samples = 3              # held-out rankings shown with their scores in the report

  if arg == "llama32_1b":
    c.init_from.hf_dir = "/models/Llama-3.2-1B-Instruct"  # override with the real folder
    c.model.update(dtype="bfloat16", remat="full", scan_layers=True, attention="auto", max_len=8192)
    c.mesh = base.mesh_config(data=1, fsdp=-1)
    c.data.update(kind="oasst", chat_template="model", val_fraction=0.05)
    c.opt = base.optimizer_config(lr=1e-5)
    c.opt.update(warmup_steps=20, weight_decay=0.0)
    # 64 responses of up to 2048 tokens per step: 8 rows per device on 8 devices.
    c.train.update(steps=300, batch_size=64, seq_len=2048, log_every=10, eval_every=50, ckpt_every=100)
  return c


def sweep_seeds():
  """The same reward model with 3 seeds (head init, packing, data order), reported as mean ± std:
  python -m launch.sweep --config=configs/reward_model.py:tiny --sweep=sweep_seeds --workdir=runs/rm_seeds \
      --config.init_from.workdir=runs/sft"""
  return [{"seed": s} for s in (0, 1, 2)]
