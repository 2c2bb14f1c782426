"""Supervised fine-tuning: conversations with a loss on the assistant's turns only.

Tiny, on this CPU, from a BPE base model pretrained on the synthetic world
(`configs/pretrain.py:world`; crawl to assistant in one go: `bash launch/pipeline.sh`):
  python -m experiments.sft --config=configs/sft.py:tiny --workdir=runs/sft \
      --config.init_from.workdir=runs/base

Worked arithmetic only, small numbers (the start of GRPO, configs/grpo.py:tiny):
  python -m experiments.sft --config=configs/sft.py:arith --workdir=runs/sft_arith \
      --config.init_from.workdir=runs/base

With tools (calculator/Python for arithmetic and spelling, search for facts), same base:
  python -m experiments.sft --config=configs/sft.py:tools --workdir=runs/sft_tools \
      --config.init_from.workdir=runs/base --config.data.world=runs/data/crawl/world.json
(`configs/sft.py:tools_long`: twice the steps, with made-up words to spell: the copying that letter
counting needs, from a base pretrained with `model.smear_keys=True`.)

Real scale: SFT of an imported Qwen2.5-1.5B on GSM8K with calculator calls,
bfloat16, FSDP over every device (its memory is checked ahead of time in tests):
  python -m experiments.compile --config=configs/sft.py:qwen_gsm8k --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Qwen2.5-1.5B
  python -m experiments.sft --config=configs/sft.py:qwen_gsm8k --workdir=gs://.../sft \
      --config.init_from.hf_dir=/models/Qwen2.5-1.5B
(GSM8K's calculator calls are written with the project's tool tokens, which
Qwen's vocabulary lacks, so training this one still needs a tokenizer with them;
compiling it does not.)

Imported Llama 3.x trained in their own chat template (`data.chat_template='model'`,
lm/chat_template.py: the folder's tokenizer_config.json template, loss on the
assistant's text and <|eot_id|>) on OpenAssistant conversations; bf16, FSDP, full
remat; compile first on virtual devices (reads config.json only; the dicts are in
configs/hf_models.py):
  python -m experiments.compile --config=configs/sft.py:llama32_1b --virtual_devices=8 \
      --config.init_from.hf_dir=/models/Llama-3.2-1B-Instruct
  python -m experiments.compile --config=configs/sft.py:llama31_8b --virtual_devices=64 \
      --config.init_from.hf_dir=/models/Llama-3.1-8B-Instruct
  python -m experiments.sft --config=configs/sft.py:llama32_1b --workdir=gs://.../sft_llama \
      --config.init_from.hf_dir=/models/Llama-3.2-1B-Instruct

The model's architecture comes from `init_from` (keys left `None` here); set one
and it must agree with the source. Data sources are `kind[:path][*weight]`,
comma-separated: messages (OpenAI-style JSONL), sharegpt, oasst, gsm8k, and the
tasks (world, arithmetic, spelling, gsm8k: lm/tasks). With a path, `gsm8k:file`
is the file's solutions with python calls; bare `gsm8k` is the task's plain
solutions (`examples_per_task` of them, from ../shared/data/gsm8k-train.jsonl).
"""
from __future__ import annotations

import ml_collections

from configs import base

ARGS = ("tiny", "arith", "tools", "tools_long", "qwen_gsm8k", "llama32_1b", "llama31_8b")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"configs/sft.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # step RNG, data mixing and packing order

  c.init_from = base.init_from_config()
  c.model = base.inherited_model_config(base.CPU_ATTENTION if arg in ("tiny", "arith", "tools", "tools_long") else None)
  c.mesh = base.mesh_config()
  c.sharding_rules = base.SHARDING_RULES

  c.data = ml_collections.ConfigDict()
  c.data.sources = "world*1,arithmetic*1,spelling*1"  # kind[:path][*weight], comma-separated
  c.data.world = ""               # world.json of the crawl the base model read ("": the seeded world)
  c.data.world_seed = 0           # seed of the synthetic world when data.world is ""
  c.data.exposures = ""           # each fact's count in the base model's shards (<shards>/train/exposures.json; "": by design)
  c.data.examples_per_task = 3000 # training conversations generated per synthetic task
  c.data.made_up_people = 0       # tools: half the world conversations ask about this many people of another
                                  # world instead (searched with its pages): copying names, not recalling them
  c.data.injection_share = 0.0    # tools: share of the search index's pages (none stating a held-out fact) carrying a
                                  # planted instruction the world conversations' replies ignore (lm/injection.py)
  c.data.layout = "pack"          # pack (best-fit, attention kept inside each conversation) | pad
  c.data.chat_template = "own"    # own (lm/conversation.py) | model: the source tokenizer's template (lm/chat_template.py)
  c.data.val_fraction = 0.05      # held-out share of conversations (assistant-token loss)
  c.data.prefetch_threads = 2     # Grain read threads

  c.tasks = base.task_options()   # options of the synthetic tasks (digits, kinds, worked steps)

  c.opt = base.optimizer_config(lr=3e-4)  # higher rates overwrite what pretraining stored (1e-3: 8+ facts 14% vs 23%)
  c.opt.warmup_steps = 20
  c.opt.weight_decay = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.steps = 150             # optimizer steps
  c.train.batch_size = 32         # global rows per step
  c.train.grad_accum = 1          # microbatches per step
  c.train.seq_len = 256           # tokens per row
  c.train.log_every = 25          # steps between metric lines
  c.train.eval_every = 150        # steps between evaluations (and at step 0: the base model's answers)
  c.train.eval_batches = 4        # held-out batches for the assistant-token loss
  c.train.ckpt_every = 50         # steps between checkpoints
  c.train.keep_checkpoints = 2    # newest checkpoints kept
  c.train.nonfinite = "stop"      # a NaN/Inf loss or gradient: "stop" (exit 2, last checkpoint kept) | "skip" (count it)
  c.train.async_checkpoint = True # write checkpoints in the background
  c.train.profile_steps = 0       # >0: jax.profiler trace of that many steps

  c.eval = ml_collections.ConfigDict()
  c.eval.tasks = "world,arithmetic,spelling"  # held-out task prompts answered greedily at each evaluation
  c.eval.examples = 64            # held-out prompts per task (world: every held-out fact)
  c.eval.max_new_tokens = 200     # reply budget (a reply without <|im_end|> fails format; worked arithmetic is long)

  c.tools = ml_collections.ConfigDict()
  c.tools.use = ""                # "python,search": task answers call them in SFT data and the evaluation runs them
  c.tools.search_folder = ""      # JSONL/Parquet pages the search tool indexes ("": <data>/clean/jsonl beside data.world)
  c.tools.max_tool_tokens = 128   # a tool output's budget in tokens (cut beyond, marked truncated; a search hit
                                  # of 200 characters is ~105 tokens with this BPE, at most ~150)
  c.tools.search_snippet = "sentences"  # the search hit's text: "sentences" (the sentences weighing most for the
                                  # query, in page order) or "passage" (the text from the best sentence on)
  c.tools.search_chars = 200      # the snippet's length in characters

  if arg == "arith":
    # Worked arithmetic only, small enough that the SFT model is right some of the time: the start
    # of GRPO (configs/grpo.py:tiny), which needs groups with both right and wrong answers.
    c.data.sources = "arithmetic*1"
    c.eval.tasks = "arithmetic"
    c.eval.examples = 128
    c.eval.max_new_tokens = 128
    # Worked steps in their short form ("8+7=15" per column, 27 tokens per 2–3-digit sum against 111):
    # greedy 0.602 on this mix (0.586 verbose), and GRPO's iterations ~3× cheaper (README, GRPO).
    c.tasks.arithmetic.update(add_digits=(1, 3), mul_digits=(1, 2), mul_by_digits=(1, 1), compact=True)
    c.opt.lr = 1e-3  # nothing of pretraining's to protect here but the language
    c.train.update(steps=300, eval_every=100)
  if arg in ("tools", "tools_long"):
    # The same SFT, with arithmetic and spelling answered through Python (the calculator for plain
    # arithmetic) and world facts through BM25 search over the crawl's pages.
    c.tools.use = "python,search"
    # Copying operands into a call and the output into the answer is learnt late and only at the higher
    # rate (held-out arithmetic through the calculator, seed 0: lr 3e-4 × 150 steps 0.031, 1e-3 × 150
    # 0.078, 1e-3 × 300 0.906; without tools 0.016). The facts the weights store matter less here:
    # this model looks them up.
    c.opt.lr = 1e-3
    c.train.update(steps=300, eval_every=300)
    # Names it must copy into the query, not recall (lm/tasks/tool_use.py): the query names the asked
    # held-out entity 0.72 of the time instead of 0.15, facts through search 0.118 instead of 0.036.
    c.data.made_up_people = 300
  if arg == "tools_long":
    # Words to copy into a Python call, not recall: 2000 made-up words in the spelling lessons, and
    # twice the steps. From a base with smeared keys (README, Tools) the calls carry the asked word
    # 17–27 times of ~62 instead of 0, letter counting 0.641 ± 0.055 against 0.419 ± 0.053 without
    # tools, spelling out 0.413 against 0 (seeds 0–2); on the plain base and at 300 steps the words
    # were not copied (letter counting 0.38 against 0.41).
    c.tasks.spelling.made_up_words = 2000
    # 16 rows per step (the rows of the tools preset's 300 × 32): measured so, the steps teach the copying.
    c.train.update(steps=600, batch_size=16, eval_every=600)
  if arg == "qwen_gsm8k":
    c.init_from.hf_dir = "/models/Qwen2.5-1.5B"  # override with the real folder; the architecture comes from it
    c.model.update(dtype="bfloat16", remat="full", scan_layers=True, attention="auto", max_len=4096)
    c.mesh = base.mesh_config(data=1, fsdp=-1)
    c.data.sources = "gsm8k:../shared/data/gsm8k-train.jsonl*1"
    c.eval.tasks = ""
    c.opt = base.optimizer_config(lr=1e-5)
    c.opt.update(warmup_steps=50, weight_decay=0.0)
    c.train.update(steps=2000, batch_size=64, grad_accum=4, seq_len=1024, log_every=20,
                   eval_every=200, ckpt_every=200, eval_batches=8)
  if arg in ("llama32_1b", "llama31_8b"):
    big = arg == "llama31_8b"
    c.init_from.hf_dir = "/models/Llama-3.1-8B-Instruct" if big else "/models/Llama-3.2-1B-Instruct"
    c.model.update(dtype="bfloat16", remat="full", scan_layers=True, attention="auto", max_len=8192)
    c.mesh = base.mesh_config(data=1, fsdp=-1)
    c.data.update(sources="oasst:../shared/data/oasst2-ranked-trees.jsonl.gz*1", chat_template="model")
    c.eval.tasks = ""
    c.opt = base.optimizer_config(lr=1e-5)
    c.opt.update(warmup_steps=50, weight_decay=0.0)
    # One 4096-token row per device per microbatch on 64 devices (8B); two 2048-token rows on 8 (1B).
    c.train.update(steps=1000, batch_size=256 if big else 64, grad_accum=4, seq_len=4096 if big else 2048,
                   log_every=20, eval_every=200, ckpt_every=200, eval_batches=4)
  return c


def sweep_seeds():
  """The same SFT with 3 seeds (data order and generated examples), reported as mean ± std:
  python -m launch.sweep --config=configs/sft.py:tiny --sweep=sweep_seeds --workdir=runs/sft_seeds \
      --config.init_from.workdir=runs/base"""
  return [{"seed": s} for s in (0, 1, 2)]
