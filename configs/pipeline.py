"""The whole journey in one command: crawl → clean text → BPE → base model → SFT (tools) → GRPO →
reward model → RLHF, one sub-workdir per stage, and one report card (experiments/pipeline.py).

  python -m experiments.pipeline --config=configs/pipeline.py:tiny --workdir=runs/pipeline

Each stage is the command its own README section shows, run as a subprocess
(`python -m experiments.<x> ...`, output tee'd to <workdir>/<stage>.log) with its
workdir under <workdir>/<stage>; the sizes below are passed down as
`--config.*` overrides. A stage that exited 0 with its outputs in place gets
<workdir>/<stage>/pipeline_done.json and is skipped when the command is run
again; an interrupted one runs again and resumes from its newest checkpoint.
<workdir>/report.md (PNGs beside it) is rewritten after every stage.

Stages, in order (what each starts from):
  data          synthetic crawl → web pipeline → BPE tokenizer → token shards (configs/data.py:synthetic)
  base          pretraining on the shards (configs/pretrain.py:world)
  sft           SFT with tool calls: python for arithmetic and spelling, search for facts (sft.py:tools), from base
  sft_arith     worked-arithmetic SFT (sft.py:arith), from base: GRPO's start
  grpo          GRPO on worked addition, compact steps (grpo.py:tiny), from sft_arith
  sft_chat      SFT without tools (sft.py:tiny), from base: the policy that RLHF ranks and trains. The
                rankings' gold labeller grades the words of a reply, and gold_rankings samples without
                running tools, so a policy that answers facts by searching would be ranked on unanswered calls
  refusal       the refusal recipe (refusal.py:tiny): probe sft_chat on every fact, SFT again from base with
                refusals where it does not know; hallucination and refusal rates before and after
  rankings      k replies per world question from sft_chat, ranked by the hidden gold labeller
  reward_model  a reward model on those rankings (reward_model.py:tiny, data.kind=ranked), from sft_chat
  rlhf          GRPO against the reward model with a KL penalty, gold reward measured (rlhf.py:tiny), from sft_chat

Subset: `--config.stages=grpo,rlhf` runs those two; each stage they read from must be finished
already. Any stage key can be shrunk, and `<stage>.overrides` passes more flags to that stage's
commands (e.g. `--config.grpo.overrides="--config.eval.examples=32"`).
"""
from __future__ import annotations

import ml_collections

from lm.pipeline import STAGES

ARGS = ("tiny",)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/pipeline.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # every stage's config.seed (and the base's data order, the rankings' --seed)
  c.stages = ",".join(STAGES)     # the stages to run, comma-separated, in this order (a subset: the rest must be done)
  c.compilation_cache = True      # stages share <workdir>/jax_cache: a resumed or repeated stage loads its programs

  c.data = ml_collections.ConfigDict()
  c.data.vocab_size = 2048        # sentencepiece BPE vocabulary (chat and tool tokens included)
  c.data.extra_fraction = 0.05    # share of the interpreter's docs put into the shards beside the crawl
  c.data.workers = 2              # processes for the web pipeline and tokenization
  c.data.copy_drills = 0          # copy-drill documents in the training shards (lm/prep/copy_drills.py)
  c.data.corpus_repeats = 23      # the pages written this many times into the shards (re-packed each pass, each drill
                                  # once): ~one pass per 16 base steps, so the base reads fresh row mixes throughout
  c.data.overrides = ""           # more flags for prepare_data, train_tokenizer and tokenize_data

  c.base = ml_collections.ConfigDict()
  c.base.steps = 360              # pretraining steps of 32 × 256 tokens (~22 passes over the world's 132k tokens). With
                                  # the pages re-packed (corpus_repeats), held-out loss 1.50 after 240 steps and 1.68
                                  # after 400, against 2.66 after 620 steps of one packing; but the facts need the passes:
                                  # seen 8+ times, right after sft_chat 0.52 from 240 and from 360 steps, 0.74 from 400
                                  # (2026-12-03; one run each: 400 steps would take the pipeline past 30 minutes)
  c.base.overrides = ""           # more flags for experiments.pretrain

  c.sft = ml_collections.ConfigDict()
  c.sft.steps = 300               # SFT steps (tool-use conversations, lr 1e-3), evaluated at step 0 and at the end
                                  # (150 steps leave the calls' operands and outputs uncopied: arithmetic 0.08)
  c.sft.batch_size = 16           # rows of 256 tokens per step (the preset's 32): calculator arithmetic 0.86 and 0.97
                                  # on two bases against 0.91: the steps teach the copying, not the rows (2026-12-03)
  c.sft.overrides = ""            # more flags for experiments.sft (configs/sft.py:tools)

  c.sft_arith = ml_collections.ConfigDict()
  c.sft_arith.steps = 300         # worked-arithmetic SFT steps (lr 1e-3): GRPO needs groups with right and wrong
                                  # answers (16 rows: 0.30 right after 200 steps, 0.54 after 300; 250 from a weaker
                                  # base: 0.24, and GRPO then gains 1.5 points instead of 6.6)
  c.sft_arith.batch_size = 16     # rows per step
  c.sft_arith.eval_every = 150    # steps between its held-out evaluations
  c.sft_arith.overrides = ""      # more flags for experiments.sft (configs/sft.py:arith)

  c.grpo = ml_collections.ConfigDict()
  c.grpo.steps = 40               # GRPO iterations of 32 prompts × 8 samples (~4½ min; the preset's 320, ~21 min,
                                  # gain 16-18 points of held-out pass@1, these ~3-7)
  c.grpo.eval_every = 20          # iterations between held-out pass@k evaluations (and at step 0)
  c.grpo.overrides = ""           # more flags for experiments.grpo (configs/grpo.py:tiny)

  c.sft_chat = ml_collections.ConfigDict()
  c.sft_chat.steps = 150          # SFT steps without tools (configs/sft.py:tiny)
  c.sft_chat.batch_size = 16      # rows per step (facts seen 8+ times 0.74 after it, from a 400-step base)
  c.sft_chat.overrides = ""       # more flags for experiments.sft (configs/sft.py:tiny)

  c.refusal = ml_collections.ConfigDict()
  c.refusal.steps = 150           # SFT steps with the probed refusals (as sft_chat's, from the same base)
  c.refusal.batch_size = 16       # rows per step (as sft_chat's)
  c.refusal.made_up = 0           # made-up people whose facts are refused too (README: 24 trades knowledge for refusals)
  # Refusals in place (at the value's token) for the facts right at most 2 of 8 times: never-seen hallucination
  # −42% for −2.0 points on facts seen 8+ times, three seeds on 2026-12-03's base (−38% for −4.1 on one of
  # 2026-12-04; the recipe's defaults, lead/1: −22% for −3.1; in_value −44% for −4.6, README).
  c.refusal.style = "in_place"    # where the refusal falls: in the answer's sentence, at its value (or "lead", "in_value")
  c.refusal.samples = 8           # probe answers per fact at temperature 1
  c.refusal.max_correct = 2       # "unknown": right at most this many times
  c.refusal.overrides = ""        # more flags for experiments.refusal (configs/refusal.py:tiny)

  c.rankings = ml_collections.ConfigDict()
  c.rankings.prompts = 1000       # world questions asked (rankings whose replies all tie are dropped)
  c.rankings.k = 5                # replies per question, ranked together
  c.rankings.overrides = ""       # more flags for experiments.gold_rankings

  c.reward_model = ml_collections.ConfigDict()
  c.reward_model.steps = 60       # optimizer steps of 40 rows (responses) of 96 tokens
  c.reward_model.eval_every = 30  # steps between held-out ranking evaluations (and at step 0)
  c.reward_model.overrides = ""   # more flags for experiments.reward_model

  c.rlhf = ml_collections.ConfigDict()
  c.rlhf.steps = 24               # RLHF iterations of 8 questions × 8 samples (the preset's 80 show the gold fall)
  c.rlhf.eval_every = 8           # iterations between held-out proxy / gold / KL evaluations (and checkpoints)
  c.rlhf.best_of_n = 32           # best-of-n curve from the start: samples per held-out question (0: off)
  c.rlhf.second_rm = False        # also rank a second file (seed + 1) and train a second reward model
                                  # (<workdir>/reward_model_b): the early-stopping rules' judge
  c.rlhf.overrides = ""           # more flags for experiments.grpo (configs/rlhf.py:tiny)
  return c
