"""Synthetic preference data: k replies per world question from a policy, ranked by the hidden gold score.

  python -m experiments.gold_rankings --policy=runs/sft --out=runs/rankings/seed0.jsonl \\
      --world=runs/data/crawl/world.json --exposures=runs/data/shards/train/exposures.json \\
      --prompts=600 --k=5 --seed=0

Each question of the world task's "train" split (its entities never appear in
held-out evaluation; --split=eval asks about those held-out entities instead) is rendered once with the one conversation renderer,
prefilled once, and answered `k` times at temperature 1 by the rollout engine
(samples_per_prompt=k). Each reply is scored by `lm.gold.score` (correct, ended,
tidy, concise, not repetitive), and the line written is the ranked JSONL the
reward-model stage reads (`lm/data/rankings.py`, data.kind=ranked):

  {"prompt": [messages], "responses": [k texts], "ranking": [best … worst, ties as lists],
   "gold": [k scores], "meta": {...}}

The "gold" and "meta" fields are for analysis only; the reward model reads
prompt, responses and ranking. Rankings whose k replies all tie carry no
preference and are not written (counted). The held-out split is by prompt:
experiments.reward_model holds out `data.val_fraction` of the prompts by hash.
A different --seed draws other questions (and their phrasings) and other
samples: the second reward model of the early-stopping rule trains on those.
"""
from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np
from absl import flags

from configs import base
from lm import cli, init_from, rlhf, sharding, tasks
from lm.errors import UserError

_POLICY = flags.DEFINE_string("policy", None, "Workdir of the policy that answers (an SFT run).")
_OUT = flags.DEFINE_string("out", None, "The ranked JSONL to write.")
_WORLD = flags.DEFINE_string("world", "", "world.json of the crawl ('': the world of --world_seed).")
_WORLD_SEED = flags.DEFINE_integer("world_seed", 0, "Seed of the synthetic world when --world is ''.")
_EXPOSURES = flags.DEFINE_string("exposures", "", "exposures.json of the pretraining shards ('': by design).")
_PROMPTS = flags.DEFINE_integer("prompts", 600, "Questions asked (each answered --k times).")
_K = flags.DEFINE_integer("k", 5, "Replies per question (ranked together).")
_SEED = flags.DEFINE_integer("seed", 0, "Which questions and which samples.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"], "The world task's split the questions come from "
                           "(eval: held-out entities, for testing a reward model on facts it never saw ranked).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 48, "Reply budget; a reply cut there is not 'ended'.")
_BATCH = flags.DEFINE_integer("batch", 16, "Questions per engine call (one compiled shape).")


def main() -> None:
  for name, flag in (("--policy", _POLICY), ("--out", _OUT)):
    if not flag.value:
      raise UserError(f"{name} is required")
  if _K.value < 2 or _PROMPTS.value < 1 or _BATCH.value < 1:
    raise UserError("--k must be ≥ 2, --prompts and --batch ≥ 1")
  for name, flag in (("--world", _WORLD), ("--exposures", _EXPOSURES)):
    if flag.value and not os.path.exists(flag.value):
      raise UserError(f"{name}: no such file {flag.value!r}")
  mesh = sharding.make_mesh(base.mesh_config())
  rules = tuple(base.SHARDING_RULES)
  loaded = init_from.load_model(ml_collections.ConfigDict({"workdir": _POLICY.value, "hf_dir": "", "step": -1}),
                                mesh, rules, key={"workdir": "--policy", "hf_dir": "--policy", "step": "--policy"})
  task = tasks.get("world", world=_WORLD.value or None, seed=_WORLD_SEED.value,
                   exposures=_EXPOSURES.value or None)
  examples = task.examples(_SPLIT.value, _PROMPTS.value, _SEED.value)
  t0 = time.perf_counter()
  records, stats = rlhf.sample_rankings(loaded.model, loaded.params, loaded.tokenizer, mesh, rules, examples, task,
                                   _K.value, _MAX_NEW.value, _BATCH.value, _SEED.value)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  pairs = sum(len(rlhf.gold_pairs(r["gold"])) for r in records)
  print(f"gold_rankings: {len(records)} rankings of {_K.value} ({pairs} ordered pairs) from {len(examples)} "
        f"questions, {stats['all_tied']} all tied (dropped), mean gold {stats['mean_gold']:.3f}, "
        f"{time.perf_counter() - t0:.0f} s → {_OUT.value}", flush=True)


if __name__ == "__main__":
  cli.run(lambda: None, lambda _: main(), required=())
