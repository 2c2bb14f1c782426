"""RLHF: GRPO against a reward model, with the KL penalty, and over-optimisation measured (experiments/grpo.py).

The whole tiny chain on this CPU, from the world SFT (configs/sft.py) of `launch/pipeline.sh`:

  # 1. synthetic rankings: 5 replies per world question from the SFT policy, ranked by the hidden gold
  #    labeller (lm/gold.py); two files with other questions and samples (about 1 min each)
  python -m experiments.gold_rankings --policy=runs/sft --out=runs/rankings/seed0.jsonl --seed=0 \\
      --world=runs/data/crawl/world.json --exposures=runs/data/shards/train/exposures.json --prompts=1500
  python -m experiments.gold_rankings ... --out=runs/rankings/seed1.jsonl --seed=1
  # 2. the reward model (the proxy) and the stopping rule's second reward model (about 4 min each)
  python -m experiments.reward_model --config=configs/reward_model.py:tiny --workdir=runs/rm \\
      --config.init_from.workdir=runs/sft --config.data.kind=ranked --config.data.path=runs/rankings/seed0.jsonl \\
      --config.train.seq_len=96 --config.train.batch_size=40 --config.train.steps=200
  python -m experiments.reward_model ... --workdir=runs/rm_b --config.seed=1 \\
      --config.data.path=runs/rankings/seed1.jsonl
  # 3. RLHF against runs/rm, judged by runs/rm_b (stopping rule) and the gold labeller (measurement)
  python -m experiments.grpo --config=configs/rlhf.py:tiny --workdir=runs/rlhf \\
      --config.init_from.workdir=runs/sft --config.reward.workdir=runs/rm --config.reward.stop_workdir=runs/rm_b

report.md's "Reward over-optimisation" section has proxy, second-model and gold rewards against
√KL per reply for RL and best-of-n (n = 1…64, sampled once from the start), the Gao et al. fits
(α, β), the stopping rule's step against the gold optimum, and replies before, at the stop and at
the end. Measured numbers are in the README (section RLHF).
"""
from __future__ import annotations

import ml_collections

from configs import grpo

ARGS = ("tiny",)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/rlhf.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = grpo.get_config("tiny")
  c.init_from.workdir = "runs/sft"
  c.data.tasks = "world"
  c.data.world = "runs/data/crawl/world.json"
  c.data.exposures = "runs/data/shards/train/exposures.json"
  c.eval.tasks = "world"
  c.reward.update(kind="model", workdir="runs/rm", stop_workdir="runs/rm_b", gold=True, seq_len=96,
                  batch_size=64, stop_patience=2)
  # A reward model's scores are rarely all equal within a group; every row keeps its KL term
  c.rl.update(prompts_per_step=8, group=8, max_new_tokens=48, kl_coef=0.05, drop_no_signal=False)
  # lr 1e-4 with kl_coef 0.02 jumps to 2.2 nats per reply in 10 steps, past the region where the gold
  # reward rises (best-of-n's gold peaks near 0.6 nats); 3e-5 reaches it in ~16 steps.
  c.opt.update(lr=3e-5, warmup_steps=3)
  # A checkpoint at every evaluation, all kept (11 × 45 MB): the stopping rule's step can be loaded afterwards.
  c.train.update(steps=80, batch_size=64, seq_len=96, eval_every=8, ckpt_every=8, keep_checkpoints=11)
  # 8 samples on each of 32 held-out prompts: the gold mean's standard error is about 0.035.
  c.eval.update(examples=32, samples=8, max_new_tokens=48, best_of_n=64, bon_prompts=32, show=3)
  return c


def sweep_seeds():
  """3 seeds of the RLHF run (prompt order, sampling, steps):
  python -m launch.sweep --config=configs/rlhf.py:tiny --sweep=sweep_seeds --workdir=runs/rlhf_seeds"""
  return [{"seed": s} for s in (0, 1, 2)]
