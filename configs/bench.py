"""Benchmarks, each printing one JSON object as its last line.

  python -m experiments.bench --config=configs/bench.py:train_step
      Train-step throughput and MFU (batch 16, context 256, width 256, 4 layers,
      4 heads, vocab 4096, GPT-2 style, float32, AdamW) beside a nanoGPT-style
      PyTorch step from the same weights (lm/bench/torch_peer.py): torch.compile
      with fused AdamW (the headline) and eager, alternating 7 rounds, medians.
      ~8 min on 2 CPU cores.
  python -m experiments.bench --config=configs/bench.py:decode
      KV-cache decoding: batch 8, prompt 64, 256 new tokens, same shapes, against
      transformers' generate with the same weights: static cache + torch.compile
      (the headline) and the default dynamic cache, alternating rounds, medians.
  python -m experiments.bench --config=configs/bench.py:sft_step
      SFT on packed conversations (the tiny SFT mix; or ShareGPT:
      --config.conversations=../shared/data/sharegpt-dummy-conversations.json) beside pretraining at the same shapes
      (the tiny preset: batch 32, context 256, width 128, 4 layers): non-padding
      tokens/s of each and their ratio, alternating 5 rounds; padding fractions.
  python -m experiments.bench --config=configs/bench.py:tool_decode
      The rollout engine with half the rows calling a tool (5 ms latency, 10 forced
      tokens per call) vs the same batch without tools, and vs the lockstep sampler:
      batch 8, prompt 64, 256 new tokens, alternating 15 rounds, medians.
  python -m experiments.bench --config=configs/bench.py:rollout
      GRPO's group sampling: 8 prompts × 8 samples each (prompt 64, exactly 128 new
      tokens, temperature 1, full softmax, no tools) through lm.engine.rollout
      (one prefill per prompt, its cache copied to the group) beside transformers'
      generate(do_sample=True, top_k=0, num_return_sequences=8) with the same weights:
      static cache + torch.compile and the default cache, alternating 5 rounds,
      medians; the faster transformers mode is the headline. Checked: 64 rows of 128
      tokens on both sides, and both sides' samples score alike under our model.
      ~2-3 min on 2 quiet CPU cores; ~10 min when other work shares them (torch's
      OpenMP threads busy-wait: OMP_WAIT_POLICY=PASSIVE, see lm/bench/rollout.py).
"""
from __future__ import annotations

import ml_collections

from lm.errors import UserError
from configs import base

ARGS = ("train_step", "decode", "sft_step", "tool_decode", "rollout")


def get_config(arg: str = "train_step") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise UserError(f"configs/bench.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.kind = arg                   # which benchmark runs
  c.seed = 0                     # init seed
  c.model = base.model_config("bench")
  c.model.attention = "cpu_kernel"  # fused C++ causal attention: the fastest CPU path (lm/cpu/attention.py)
  c.model.weight_grad = "copy_transpose"  # weight-gradient matmuls on XLA:CPU's fast path (lm/cpu/matmul.py)
  c.mesh = base.mesh_config()
  c.sharding_rules = base.SHARDING_RULES
  c.opt = base.optimizer_config(lr=1e-3)
  c.opt.update(warmup_steps=0, schedule="constant", weight_decay=0.01, clip_norm=0.0, b2=0.999)
  c.batch_size = 16              # sequences per step (train_step) or decode rows
  c.seq_len = 256                # context (train_step)
  c.warmup_steps = 3             # untimed steps after compilation
  c.steps = 10                   # timed steps
  c.rounds = 7                   # ours and the peers alternate this many times; every figure is the median
  c.peer = True                  # also run the peer on the same machine and report the ratios
  c.peer_modes = ("compiled", "eager")  # train_step peer settings, the first is the headline (torch_peer.py)
  c.conversations = "tasks"      # sft_step: 'tasks' (the tiny SFT mix) or a ShareGPT JSON path relative to the repo root
  c.data_layout = "pack"         # sft_step: pack | pad
  if arg == "sft_step":
    c.model = base.model_config("tiny")
    c.model.update(vocab_size=384, attention="cpu_kernel")
    c.opt.update(weight_decay=0.1, clip_norm=1.0)
    c.batch_size, c.seq_len, c.rounds, c.steps = 32, 256, 5, 10  # 10 consecutive SFT batches per round
    c.peer = False
  if arg == "decode":
    c.batch_size = 8
    c.prompt_len = 64            # prompt tokens per row
    c.new_tokens = 256           # generated tokens per row
    c.steps = 1                  # timed generate calls per side per round
    c.rounds = 5
    c.warmup_steps = 1
    c.peer_modes = ("static_compiled", "default")  # transformers generate settings, the first is the headline
    c.model.max_len = 320        # learned positions must cover prompt_len + new_tokens
    c.cpu_devices = 2            # on CPU: split the cores into this many devices, rows sharded over them (0: JAX default)
    c.xla_cpu_flags = "--xla_cpu_use_xnnpack=false"  # appended to XLA_FLAGS: Eigen beats XNNPACK at 8-row matmuls
  if arg == "rollout":
    c.batch_size = 8             # prompts per call (GRPO's prompts per step)
    c.samples_per_prompt = 8     # G: samples of each prompt (the group), one prefill each
    c.prompt_len, c.new_tokens = 64, 128
    c.steps, c.rounds, c.warmup_steps = 1, 5, 1
    c.peer_modes = ("static_compiled", "default")  # transformers generate settings; the faster one is the headline
    c.model.max_len = 192        # learned positions must cover prompt_len + new_tokens
    c.chunk = 16                 # engine decode steps per jitted call (its default; GRPO with tools needs chunks)
    c.logprob_tolerance = 0.05   # nats: how far the sides' mean sample log-probs may differ (top-k 50: ~0.7)
    c.cpu_devices = 2            # on CPU: split the cores into this many devices, rows sharded over them (0: JAX default)
    c.xla_cpu_flags = "--xla_cpu_use_xnnpack=false"  # appended to XLA_FLAGS, as for decode
  if arg == "tool_decode":
    c.batch_size, c.prompt_len, c.new_tokens = 8, 64, 256
    c.rounds, c.warmup_steps = 15, 1
    c.model.max_len = 320        # learned positions must cover prompt_len + new_tokens
    c.model.attention = "auto"   # decoding reads the KV cache, not the training kernel
    c.model.init_std = 0.3       # greedy decoding of a wide random init cycles: the marker token recurs
    c.chunk = 16                 # decode steps per jitted call (fewer when a row pauses)
    c.poll_chunk = 2             # decode steps per jitted call while a tool call is out (the engine's default)
    c.tool_latency_s = 0.005     # each tool call's wall time
    c.tool_output = "12345678"   # each call's output (+2 marker tokens, forced)
    c.peer = False
  return c
