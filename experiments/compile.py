"""Compile a config's train step ahead of time and report per-device memory, without training.

  python -m experiments.compile --config=configs/pretrain.py:llama_1b --virtual_devices=8
  python -m experiments.compile --config=configs/sft.py:qwen_gsm8k --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Qwen2.5-1.5B   # reads only its config.json
  python -m experiments.compile --config=configs/reward_model.py:llama32_1b --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Llama-3.2-1B-Instruct   # a reward model: the ranking loss
  python -m experiments.compile --config=configs/grpo.py:qwen_gsm8k --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Qwen2.5-1.5B-Instruct

With --virtual_devices=N on a CPU host, N fake CPU devices stand in for the
accelerators, which checks sharding and gives XLA's memory estimate for that
mesh; on the real slice, leave it out.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
_VIRTUAL = flags.DEFINE_integer("virtual_devices", 0, "Fake this many CPU devices (0: real devices).")


def main(config) -> dict:
  from lm import aot, init_from, sharding
  if "init_from" in config:  # a post-training stage: the architecture comes from its source's config
    source = init_from.resolve(config.init_from)
    with config.unlocked():
      config.model = init_from.merge_model_config(config.model, source)
  mesh = sharding.make_mesh(config.mesh)
  if config.model.head == "score":  # a reward model: the ranking loss and its batch (group, rank per row)
    from lm import reward_model
    return reward_model.compile_train_step(config, mesh)[1]
  if "rl" in config:  # GRPO: its own loss and batch
    _, stats = aot.compile_grpo_step(config, mesh)
    return stats
  # Packed rows (SFT, or pretraining with document masks) carry positions and segment ids.
  packed = config.data.get("layout") == "pack" or config.data.get("document_mask")
  _, stats = aot.compile_train_step(config, mesh, batch_keys=aot.PACKED_BATCH if packed else None)
  return stats


def _setup():
  if _VIRTUAL.value:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={_VIRTUAL.value}")
    os.environ["JAX_PLATFORMS"] = "cpu"
  return main(_CONFIG.value)


if __name__ == "__main__":
  from lm import cli
  cli.run(_setup, lambda stats: print(json.dumps(stats), file=sys.stdout, flush=True),
          required=("config",))
