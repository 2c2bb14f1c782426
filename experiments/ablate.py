"""The field's claims as ablations, one command each (configs/ablations.py, lm/ablations.py):

  python -m experiments.ablate --config=configs/ablations.py:grpo_vs_drgrpo --workdir=runs/ablations/grpo_vs_drgrpo \\
      --config.source=runs/pipeline

Runs every arm × seed (each the README's own command, started from the source
pipeline's checkpoints) one after another through the pipeline's runner: a run
that finished is skipped, an interrupted one resumes, a failure stops with one line
naming its log. <workdir>/report.md (the table, mean ± std over seeds, every seed's
value), ablation.json and ablation.png are rewritten after each run, so running the
command again when everything has finished just regenerates the table.
`--config.print_only=True` prints the commands and runs nothing (submit them with a
cluster launcher, then run the command here to collect the table).
"""
from __future__ import annotations

import shlex
import sys

from absl import flags
from ml_collections import config_flags

from experiments import pipeline as pipeline_experiment
from lm import ablations, cli, pipeline


def main(config, workdir: str) -> None:
  stages = ablations.plan(config, workdir)
  if config.print_only:
    for s in stages:
      for cmd in s.commands:
        print(shlex.join(["python", "-m", *cmd]))
    return
  ablations.check_source(config)
  try:
    pipeline.run_stages(stages, stages, workdir, pipeline.subprocess_runner(
        pipeline_experiment.environment(config, workdir)), card=lambda wd, _: ablations.write_report(config, wd),
        what=f"ablation {config.name}")
  except pipeline.Interrupted as e:
    print(f"{e}: run {e.stage!r} stopped (it saved its checkpoint); run the same command to resume",
          file=sys.stderr, flush=True)
    sys.exit(e.returncode if e.returncode >= 0 else 128 - e.returncode)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Ablation config (configs/ablations.py:<name>).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs, report.md and ablation.png go.")
  cli.run(lambda: None, lambda _: main(_CONFIG.value, _WORKDIR.value))
