"""GRPO: RL on verifiable tasks from an SFT checkpoint (experiments/grpo.py).

Tiny, on this CPU, from the arithmetic SFT (configs/sft.py:arith, itself from the
world base model, configs/pretrain.py:world):
  python -m experiments.grpo --config=configs/grpo.py:tiny --workdir=runs/grpo \
      --config.init_from.workdir=runs/sft_arith

Variants are config keys, not code paths: `rl.passes` (K optimisation passes per
rollout batch; 1 is on-policy), `rl.aggregation` (token_mean | sequence_mean |
constant = Dr. GRPO), `rl.scale_by_std` (Dr. GRPO: False), `rl.kl_coef` (0: the
reference is not used in the loss), `rl.clip_low` / `rl.clip_high` (DAPO's
clip-higher: 0.2 / 0.28), `tools.use=python` (RL with the calculator).

Real scale: GRPO of an imported Qwen2.5-1.5B (after SFT) on GSM8K, bfloat16, FSDP
over every device (memory checked ahead of time in tests):
  python -m experiments.compile --config=configs/grpo.py:qwen_gsm8k --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Qwen2.5-1.5B-Instruct
"""
from __future__ import annotations

import ml_collections

from configs import base

ARGS = ("tiny", "qwen_gsm8k")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/grpo.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # prompt order, sampling stream, step RNG

  c.init_from = base.init_from_config()
  c.model = base.inherited_model_config(base.CPU_ATTENTION if arg == "tiny" else None)
  c.mesh = base.mesh_config()
  c.sharding_rules = base.SHARDING_RULES

  c.data = ml_collections.ConfigDict()
  c.data.tasks = "arithmetic"     # training tasks (comma-separated; prompts mixed evenly)
  c.data.train_prompts = 4000     # training prompts generated per task (cycled, reshuffled each pass)
  c.data.world = ""               # world.json for the world task ("": the seeded world)
  c.data.world_seed = 0           # seed of the synthetic world when data.world is ""
  c.data.exposures = ""           # the base model's per-fact counts (exposures.json; "": by design)
  c.data.gsm8k = "../shared/data/gsm8k-train.jsonl"  # the GSM8K file, when a task is gsm8k

  c.tasks = base.task_options()   # options of the synthetic tasks (digits, kinds, worked steps)
  # Worked addition of 2- and 3-digit numbers in the short form ("8+7=15" per column) the arithmetic
  # SFT (sft.py:arith) writes; it is right about 60% of the time: groups with both right and wrong
  # answers, the signal GRPO needs.
  c.tasks.arithmetic.update(ops="add", add_digits=(2, 3), compact=True)

  c.rl = ml_collections.ConfigDict()
  c.rl.prompts_per_step = 32      # B prompts per rollout batch (16: noisier updates, +9 to +15 points by 120 it)
  c.rl.group = 8                  # G samples per prompt (one prefill each)
  c.rl.max_new_tokens = 64        # completion budget; cut completions score 0 and are counted. The compact
                                  # 3-digit sums run to ~30 tokens (the verbose worked form to 144)
  c.rl.temperature = 1.0          # rollout sampling temperature
  c.rl.passes = 1                 # K optimizer steps on each rollout batch (1: on-policy)
  c.rl.scale_by_std = True        # advantages divided by the group's std (Dr. GRPO: False)
  c.rl.drop_no_signal = True      # rows of groups whose rewards are all equal leave the loss's denominator
                                  # (DAPO's token mean over the groups with a signal; 50-78% have none here.
                                  # Seed 0 at 200 it: +11.9 points with it, +12.1 without; its 3 seeds, 320 it: +17.4)
  c.rl.aggregation = "token_mean" # token_mean | sequence_mean | constant (Dr. GRPO)
  c.rl.clip_low = 0.2             # ratio clipped below at 1 - clip_low
  c.rl.clip_high = 0.2            # and above at 1 + clip_high (DAPO's clip-higher: 0.28)
  c.rl.kl_coef = 0.0              # k3 KL penalty to the frozen reference (0: not in the loss)
  c.rl.measure_kl = True          # kl_coef 0: keep the reference to measure KL at each evaluation
  c.rl.wrong_penalty = 0.0        # subtracted from the reward of a reply that is neither right nor a refusal:
                                  # with it a refusal (0) beats a confident wrong answer (honesty RL after the
                                  # refusal recipe); 0: the verifier's reward alone
  c.rl.truncation_warning = 0.2   # warn when more than this share of completions hit the limit

  c.reward = ml_collections.ConfigDict()  # RLHF: the reward from a reward model (lm/rlhf.py)
  c.reward.kind = "task"          # task (the verifier of data.tasks) | model (a reward model: RLHF)
  c.reward.workdir = ""           # reward.kind=model: the reward model's workdir (experiments.reward_model)
  c.reward.step = -1              # its checkpoint (-1: the newest)
  c.reward.seq_len = 128          # tokens per scored (prompt, reply) row; longer prompts lose their start
  c.reward.batch_size = 64        # rows per reward-model forward (one compiled shape)
  c.reward.gold = False           # log the hidden gold reward (lm/gold.py, world questions) at each evaluation
  c.reward.stop_workdir = ""      # a second reward model (other rankings) for the early-stopping rule ("": none)
  c.reward.stop_patience = 2      # evaluations without a new best second-model score before the rule fires
  c.reward.stop_drop = 0.15       # agreement rule: stop before the two models' correlation falls this far

  c.tools = ml_collections.ConfigDict()
  c.tools.use = ""                # "python": the calculator / sandboxed Python inside rollouts
  c.tools.max_tool_tokens = 32    # a tool output's budget in tokens

  # With 16 prompts per step 1e-4 lowered held-out pass@1 (0.43 → 0.30 ± 0.03 by step 25, 3 seeds) and
  # 2e-5 plateaued at +9; 32 prompts per step carry 4e-5 (README, GRPO)
  c.opt = base.optimizer_config(lr=4e-5)
  c.opt.update(warmup_steps=5, schedule="constant", weight_decay=0.0, clip_norm=1.0)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 320             # GRPO iterations (rollout + rl.passes optimizer steps): ~21 min here
  c.train.batch_size = 256        # rows per optimizer step: must be rl.prompts_per_step * rl.group
  c.train.grad_accum = 1          # microbatches per optimizer step
  c.train.seq_len = 96            # longest prompt + rl.max_new_tokens must fit (prompt at the left)
  c.train.log_every = 1           # iterations between metric lines
  c.train.eval_every = 25         # iterations between held-out evaluations (and at step 0)
  c.train.ckpt_every = 25         # iterations between checkpoints
  c.train.keep_checkpoints = 2    # newest checkpoints kept
  c.train.nonfinite = "stop"      # "stop" | "skip" a non-finite step
  c.train.async_checkpoint = True # write checkpoints in the background
  c.train.profile_steps = 0       # >0: jax.profiler trace of that many steps

  c.eval = ml_collections.ConfigDict()
  c.eval.tasks = "arithmetic"     # held-out tasks (never trained on: split by problem)
  c.eval.examples = 256           # held-out prompts per task (128 × 4 samples swing by ±4 points)
  c.eval.samples = 4              # k samples per prompt at rl.temperature: pass@1 (their mean) and pass@k
  c.eval.max_new_tokens = 64      # greedy and sampled reply budget
  c.eval.warn_margin = 0.02       # warn when the train reward rises and held-out pass@1 falls by this
  c.eval.best_of_n = 0            # RLHF: m samples per prompt from the start for best-of-n, n = 1…m (0: off)
  c.eval.bon_prompts = 32         # held-out prompts the best-of-n curve uses
  c.eval.show = 3                 # held-out prompts whose sampled reply is kept per evaluation (report examples)

  if arg == "qwen_gsm8k":
    c.init_from.hf_dir = "/models/Qwen2.5-1.5B-Instruct"
    c.model.update(dtype="bfloat16", remat="full", scan_layers=True, attention="auto", max_len=4096)
    c.mesh = base.mesh_config(data=1, fsdp=-1)
    c.data.tasks = "gsm8k"
    c.eval.tasks = "gsm8k"
    c.rl.update(prompts_per_step=64, group=16, max_new_tokens=768, kl_coef=0.001, measure_kl=False,
                clip_high=0.28, aggregation="constant", scale_by_std=False)
    c.opt = base.optimizer_config(lr=1e-6)
    c.opt.update(warmup_steps=10, schedule="constant", weight_decay=0.0, clip_norm=1.0)
    c.train.update(steps=500, batch_size=64 * 16, grad_accum=16, seq_len=1024, eval_every=25, ckpt_every=25)
    c.eval.update(examples=256, samples=4, max_new_tokens=768)
  return c


def sweep_seeds():
  """3 seeds of the same run; the collector writes mean ± std:
  python -m launch.sweep --config=configs/grpo.py:tiny --sweep=sweep_seeds --workdir=runs/grpo_seeds \\
      --config.init_from.workdir=runs/sft_arith"""
  return [{"seed": s} for s in (0, 1, 2)]

