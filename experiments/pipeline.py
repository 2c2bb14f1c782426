"""The whole chain in one command: python -m experiments.pipeline --config=configs/pipeline.py:tiny \\
    --workdir=runs/pipeline

Runs data → base → sft (tools) → sft_arith → grpo → sft_chat → rankings →
reward_model → rlhf, each stage the README's own command as a subprocess with
its workdir under --workdir (logic: lm/pipeline.py), and rewrites
<workdir>/report.md, the report card, after every stage (lm/report_card.py).
Run it again and finished stages are skipped, an interrupted one resumes;
`--config.stages=grpo,rlhf` runs a subset.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from lm import cli, pipeline, report_card
from lm.cpu import malloc


def environment(config, workdir: str) -> dict:
  """The stages' environment: the project importable, unbuffered output, the CPU malloc tuning
  launch/local.sh gives (when it applies), one compilation cache for all stages."""
  env = dict(os.environ)
  env["PYTHONPATH"] = pipeline.ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env["PYTHONUNBUFFERED"] = "1"
  env = malloc.environment(env, malloc.has_accelerator()) or env
  if config.compilation_cache:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.abspath(workdir), "jax_cache"))
  return env


def main(config, workdir: str) -> None:
  try:
    pipeline.run(config, workdir, pipeline.subprocess_runner(environment(config, workdir)),
                 card=report_card.write)
  except pipeline.Interrupted as e:
    print(f"{e}: stage {e.stage!r} stopped (a training stage saved its checkpoint); run the same command "
          "to resume", file=sys.stderr, flush=True)
    sys.exit(e.returncode if e.returncode >= 0 else 128 - e.returncode)


if __name__ == "__main__":  # flags only when run: experiments.ablate imports environment() from here
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Pipeline config file (configs/pipeline.py:tiny).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "The top workdir: one sub-workdir per stage, report.md.")
  cli.run(lambda: None, lambda _: main(_CONFIG.value, _WORKDIR.value))
