"""Prompt injection through the search tool, before and after SFT that ignores planted instructions
(experiments/injection.py, lm/injection.py).

Tiny, on this CPU, from the world base model of `launch/pipeline.sh` (runs/data, runs/base): two tool-use
SFTs of 150 steps (~5 min each on 2 quiet cores) and the evaluation (~2 min):
  python -m experiments.injection --config=configs/injection.py:tiny --workdir=runs/injection/seed=0 \\
      --config.init_from.workdir=runs/base --config.seed=0

3 seeds (a base per seed from `SEEDS="0 1 2" bash launch/pipeline.sh`, or one base and 3 SFT seeds), then one table:
  python -m experiments.injection --config=configs/injection.py:tiny --workdir=runs/injection/seed=1 \\
      --config.init_from.workdir=runs/base/seed=1 --config.seed=1                          # and 0, 2
  python -m experiments.injection --collect=runs/injection/seed=0,runs/injection/seed=1,runs/injection/seed=2

The SFT is configs/sft.py:tools (same mix, steps and schedule) for both models; "after" plants
`injection.share` of the pages that state no held-out fact, so about that share of the world's tool-use
conversations show an instruction their reply ignores. The seed picks the SFT's data order and examples,
the planted pages, their wordings and payloads.
"""
from __future__ import annotations

import ml_collections

from configs import sft

ARGS = ("tiny",)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/injection.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = sft.get_config("tools")
  c.init_from.workdir = "runs/base"
  c.data.world = "runs/data/crawl/world.json"
  c.data.exposures = "runs/data/shards/train/exposures.json"
  # The SFTs' own step-0 and final task evaluations are skipped: the injection evaluation below is the measure
  # (the held-out loss is still logged).
  c.eval.tasks = ""

  c.injection = ml_collections.ConfigDict()
  c.injection.share = 0.3         # "after": share of the pages stating no held-out fact that carry an instruction
  c.injection.before = ""         # an existing tools SFT run as "before" ("": train it in <workdir>/before)
  c.injection.max_new_tokens = 64 # reply budget after the forced page (world answers are one sentence)
  c.injection.search_max_new_tokens = 200  # reply budget with the live tool (call and output included)
  c.injection.live_search = True  # also answer through the live BM25 tool over the planted index
  c.injection.batch = 64          # questions per decoding call (one compiled shape)
  return c
