"""The field's claims as ablations, one command each (configs/ablations.py, lm/ablations.py):

  python -m experiments.ablate --config=configs/ablations.py:grpo_vs_drgrpo --workdir=runs/ablations/grpo_vs_drgrpo \\
      --config.source=runs/pipeline

Runs every arm × seed (each the README's own command, started from the source
pipeline's checkpoints) one after another through the pipeline's runner: a run
that finished is skipped, an interrupted one resumes, a failure stops with one line
naming its log. <workdir>/report.md (the table, mean ± std over seeds, every seed's
value), ablation.json and ablation.png are rewritten after each run, so running the
command again when everything has finished just regenerates the table.
`--config.launcher=print|slurm|tpu_vm|xpk` prints each run's command for that launcher
(launch/sweep.py's) and runs nothing; once they have finished on the cluster's shared
filesystem, the same command with the default launcher (local) writes the table.
"""
from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from experiments import pipeline as pipeline_experiment
from launch import sweep
from lm import ablations, cli, pipeline
from lm.errors import UserError


def main(config, workdir: str) -> None:
  stages = ablations.plan(config, workdir)
  if config.launcher != "local":
    if config.launcher not in sweep.LAUNCHERS:
      raise UserError(f"config.launcher: {config.launcher!r} is not one of {', '.join(sweep.LAUNCHERS)}")
    for s in stages:  # the launcher's command per run, in order; nothing runs, nothing is written
      if s.needs:
        print(f"# after {', '.join(s.needs)} has finished:")
      for cmd in s.commands:
        env, line = sweep.commands(config.launcher, cmd[0], [list(cmd[1:])], list(s.workdirs),
                                   f"{config.name}-{s.name.replace('/', '-')}")[0]
        print(sweep.shell_line(env, line))
    return
  ablations.check_source(config)
  try:
    runner = pipeline.subprocess_runner(pipeline_experiment.environment(config, workdir))
    pipeline.run_stages(stages, stages, workdir, runner, card=lambda wd, _: ablations.write_report(config, wd, stages),
                        what=f"ablation {config.name}")
  except pipeline.Interrupted as e:
    print(f"{e}: run {e.stage!r} stopped (it saved its checkpoint); run the same command to resume",
          file=sys.stderr, flush=True)
    sys.exit(e.returncode if e.returncode >= 0 else 128 - e.returncode)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Ablation config (configs/ablations.py:<name>).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs, report.md and ablation.png go.")
  cli.run(lambda: None, lambda _: main(_CONFIG.value, _WORKDIR.value))
