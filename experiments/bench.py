"""Benchmarks: python -m experiments.bench --config=configs/bench.py:<train_step|decode|sft_step|tool_decode|rollout>

The last line printed is one JSON object (see configs/bench.py for each kind).
"""
from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/bench.py:<kind>")


def main(config) -> dict:
  if config.kind == "train_step":
    from lm.bench import train_step as bench_train
    return bench_train.run(config)
  if config.kind == "sft_step":
    from lm.bench import sft_step
    return sft_step.run(config)
  if config.kind == "rollout":
    from lm.bench import rollout as bench_rollout
    return bench_rollout.run(config)
  if config.kind == "tool_decode":
    from lm.bench import tool_decode
    return tool_decode.run(config)
  from lm.bench import decode as bench_decode
  return bench_decode.run(config)


def _cli(argv):
  del argv
  print(json.dumps(main(_CONFIG.value)), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(_cli)
