"""The field's claims as ablations, one command each (experiments/ablate.py, lm/ablations.py):

  python -m experiments.ablate --config=configs/ablations.py:grpo_vs_drgrpo --workdir=runs/ablations/grpo_vs_drgrpo \\
      --config.source=runs/pipeline

  sft_vs_rl        GRPO from the arithmetic SFT, 3 seeds: held-out pass@1 at step 0 (SFT alone) and at the end  (a)
  tokens_to_think  SFT on answer-only vs worked arithmetic, each followed by GRPO                                 (b)
  grpo_vs_drgrpo   GRPO (per-completion mean, std-scaled advantages) vs Dr. GRPO (constant normaliser, unscaled):
                   the length of wrong answers over training                                                      (c)
  tools            GRPO from the worked-arithmetic SFT without tools vs from the same SFT taught to call the
                   calculator (its own run per seed), with the calculator running inside the rollouts            (d)
  refusal          the refusal recipe, pure vs refusing in place (at the value's token) vs also refusing made-up people

Every run starts from a finished pipeline (`source`: its base, sft_arith, sft_chat); `{seed}` in
`source` gives each seed its own pipeline (runs/pipeline/seed={seed}: base model and SFTs per seed
too). Runs go to <workdir>/<arm>/seed=<s>/<stage>; report.md (the table, mean ± std over seeds and
each seed's value), ablation.json and ablation.png are rewritten after each run. Finished runs are
skipped when the command runs again (a no-op run just rewrites the report); `launcher` other than
local prints each run's command for a cluster launcher and runs nothing.
"""
from __future__ import annotations

import ml_collections


ARGS = ("sft_vs_rl", "tokens_to_think", "grpo_vs_drgrpo", "tools", "refusal")  # = lm.ablations.ABLATIONS (tested)


def get_config(arg: str = "sft_vs_rl") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/ablations.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.name = arg                    # the ablation (lm/ablations.py: ABLATIONS)
  c.seeds = "0,1,2"               # one run per arm and seed; the table is mean ± std over them
  c.source = "runs/pipeline"      # a finished pipeline workdir the runs start from ({seed}: one per seed)
  c.launcher = "local"            # local: run in sequence here | print | slurm | tpu_vm | xpk: print each run's
                                  # command for that launcher (launch/sweep.py) and exit, nothing run or written
  c.compilation_cache = True      # runs share <workdir>/jax_cache: repeated shapes load their programs

  c.sft_arith = ml_collections.ConfigDict()
  c.sft_arith.steps = 300         # tokens_to_think, tools: arithmetic SFT steps of the arms that run their own
  c.sft_arith.overrides = ""      # more flags for its experiments.sft commands

  c.grpo = ml_collections.ConfigDict()
  c.grpo.steps = 100              # GRPO iterations per run, ~6 min each here (the preset's 320 gain 16-18 points of
                                  # pass@1 in ~21 min; 100 gain 5-8)
  c.grpo.eval_every = 25          # iterations between held-out evaluations: the points of the curves
  c.grpo.overrides = ""           # more flags for every experiments.grpo command

  c.refusal = ml_collections.ConfigDict()
  c.refusal.steps = 150           # refusal: SFT steps with the probed refusals
  c.refusal.made_up = 24          # refusal: made-up people whose facts the made_up arm refuses too
  c.refusal.in_place_max_correct = 2  # refusal: the in_place arm refuses in place the facts right at most this often
  c.refusal.overrides = ""        # more flags for every experiments.refusal command
  return c
