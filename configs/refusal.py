"""The refusal recipe (Llama 3, section 4.3.6): probe the SFT model on every fact, teach "I don't know"
where its answers are consistently wrong, and run the SFT again with those refusals (experiments/refusal.py).

Tiny, on this CPU, from the world base model and SFT of `launch/pipeline.sh` (runs/data, runs/base, runs/sft):
  python -m experiments.refusal --config=configs/refusal.py:tiny --workdir=runs/refusal \\
      --config.init_from.workdir=runs/base --config.refusal.probe=runs/sft

3 seeds (each from its own base + SFT: `SEEDS="0 1 2" bash launch/pipeline.sh`), then one table:
  python -m experiments.refusal --config=configs/refusal.py:tiny --workdir=runs/refusal/seed=0 --config.seed=0 \\
      --config.init_from.workdir=runs/base/seed=0 --config.refusal.probe=runs/sft/seed=0     # and 1, 2
  python -m experiments.refusal --collect=runs/refusal/seed=0,runs/refusal/seed=1,runs/refusal/seed=2

Cross-fitted probe (what the base knows, not what the probed SFT was taught): two SFTs on halves of
the training entities, each answering the other half's facts:
  python -m experiments.sft --config=configs/sft.py:tiny --workdir=runs/sft_fold_a \
      --config.init_from.workdir=runs/base --config.tasks.world.train_fold=a      # and b → runs/sft_fold_b
  python -m experiments.refusal ... --config.refusal.fold_probes=runs/sft_fold_a,runs/sft_fold_b

The SFT is configs/sft.py:tiny's (same mix, steps and schedule as the probed model's) with the world's
conversations replaced by the probed ones: answers where the model knows, refusals where it does not.
"Before" is the probed SFT model on the same held-out questions; report.md has accuracy, refusal and
hallucination rates per fact exposure, before and after, and the probe's table.
"""
from __future__ import annotations

import ml_collections

from configs import sft

ARGS = ("tiny",)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/refusal.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = sft.get_config("tiny")
  c.init_from.workdir = "runs/base"  # the SFT starts where the probed model's did
  c.data.world = "runs/data/crawl/world.json"
  c.data.exposures = "runs/data/shards/train/exposures.json"

  c.refusal = ml_collections.ConfigDict()
  c.refusal.probe = "runs/sft"    # the SFT model to probe: the one this recipe improves on ("before")
  c.refusal.samples = 8           # answers per fact at temperature 1
  c.refusal.max_correct = 1       # a fact is "unknown" when at most this many of them are right
  c.refusal.min_agreement = 0.0   # ... or when its most common answer has under this share of them (0: off)
  c.refusal.max_new_tokens = 32   # the probe's reply budget (world answers are one short sentence)
  c.refusal.batch = 32            # questions per engine call (one compiled shape)
  c.refusal.made_up = 0           # people not in the world (never in any text) whose 4 facts are refused too
  c.refusal.style = "lead"        # "lead": the reply refuses from its first token; "in_place": it starts the
                                  # answer's sentence and refuses where the value would be ("She was born in — I
                                  # don't know her birth year."), so the choice falls where the fact is recalled;
                                  # "in_value": as in_place, after the start 90% of the attribute's values share
                                  # ("She was born in 19 — …", "She is a — …"), at the first token that tells them apart
  c.refusal.refusal_share = 0.0   # share of the world conversations about unknown facts (each side cycled on
                                  # its own; refusals, with `prior`'s on top); 0: the probe's own proportion
  c.refusal.prior = 0.0           # a known fact's conversation refuses too with this probability (0: off)
  c.refusal.fold_probes = ""      # "A,B": SFT runs on train_fold a and b (--config.tasks.world.train_fold=a/b),
                                  # each probing the other half's facts, never fine-tuned on (cross-fitted);
                                  # "": the probe model answers every train fact (its SFT stated them)

  c.eval.update(tasks="world", max_new_tokens=48)  # every held-out fact, greedy
  return c
