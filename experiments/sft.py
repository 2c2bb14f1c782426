"""Supervised fine-tuning: python -m experiments.sft --config=configs/sft.py:tiny --workdir=runs/sft \\
    --config.init_from.workdir=runs/base

Starts from an earlier stage (`init_from`: a pretraining workdir or a Hugging
Face folder; parameters only, the source's model config and tokenizer), reads
the configured conversation sources, renders them in the one conversation
format (or, with `data.chat_template='model'`, in an imported model's own chat
template: lm/chat_template.py), packs whole conversations into rows (attention
kept inside each), and trains on the shared loop with the next-token loss masked to the assistant's
tokens. Every evaluation reports the held-out loss on assistant tokens and
answers held-out task prompts greedily: format compliance (the reply ends with
`<|im_end|>`) and per-task accuracy, facts grouped by how often they appeared
in pretraining. The workdir gets what pretraining's does plus `eval.jsonl`
(every graded reply of the last evaluation) and the accuracy table in report.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from lm import chat_template, cli, evaluation, init_from, injection, loop, losses, sharding, tasks
from lm import tools as tools_lib
from lm.tasks import tool_use
from lm import model as model_lib
from lm.data import conversations as sources_lib
from lm.data import corpus
from lm.data import sft as sft_data
from lm.errors import UserError


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  source: init_from.Source
  tokenizer: Any
  fmt: Any                           # the conversation format (lm.chat_template.chat_format)
  train_rows: sft_data.SFTRows
  val_rows: sft_data.SFTRows
  eval_examples: list
  tasks: dict                        # task name → task (examples, reward), built once
  stats: dict
  tools: dict                        # conversation tool name → tool, for the SFT answers and evaluation
  last_rows: list = dataclasses.field(default_factory=list)  # graded replies of the last evaluation


def parse_sources(spec: str) -> list[tuple[str, str, float]]:
  """'kind[:path][*weight],...' → [(kind, path, weight)]."""
  out = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    body, _, weight = item.partition("*")
    kind, _, path = body.partition(":")
    try:
      out.append((kind, path, float(weight) if weight else 1.0))
    except ValueError:
      raise UserError(f"config.data.sources: weight {weight!r} of {item!r} is not a number") from None
  if not out:
    raise UserError("config.data.sources is empty; name at least one kind[:path][*weight]")
  return out


def is_task_source(kind: str, path: str) -> bool:
  """A task's generated examples, or a file's conversations: "gsm8k" is both a task and a source
  kind, and "gsm8k:file.jsonl" (with a path) stays the file, read with its tool calls."""
  return kind in tasks.NAMES and not (path and kind in sources_lib.kinds())


def make_tasks(config) -> dict:
  """Every task the sources and the evaluation name, built once (the world is read or generated once)."""
  names = {kind for kind, path, _ in parse_sources(config.data.sources) if is_task_source(kind, path)}
  for n in filter(None, config.eval.tasks.split(",")):
    if n not in tasks.NAMES:
      raise UserError(f"config.eval.tasks: unknown task {n!r} (one of {', '.join(tasks.NAMES)})")
    names.add(n)
  world = config.data.world or None
  if world and not os.path.exists(world):
    raise UserError(f"config.data.world: no such file {world!r} (the crawl's world.json)")
  return tasks.from_config(names, config.tasks, world, config.data.world_seed, config.data.exposures)


def make_tools(config) -> dict:
  """{"python": ..., "search": ...} for `config.tools.use` (empty: no tools)."""
  use = [n for n in config.tools.use.split(",") if n]
  if not use:
    return {}
  folder = config.tools.search_folder
  if "search" in use and not folder and config.data.world:  # the crawl's cleaned pages, beside world.json
    folder = os.path.join(os.path.dirname(os.path.dirname(config.data.world)), "clean", "jsonl")
  return tools_lib.for_conversation(use, search_folder=folder or None, key="config.tools.use",
                                    world_seed=config.data.world_seed, **tools_lib.search_options(config.tools))


def read_conversations(config, task_objs: dict, tools: dict | None = None) -> list[list[dict]]:
  """Every configured source, mixed by weight; synthetic tasks are generated from the world
  (answered through the tools where `tools` has the one a task uses)."""
  d = config.data
  mixed = []
  tools = tools or {}
  for kind, path, weight in parse_sources(d.sources):
    if is_task_source(kind, path):
      examples = task_objs[kind].examples("train", d.examples_per_task, config.seed)
      stand_ins = []
      if kind == "world" and d.made_up_people:  # half of them ask about people of another world instead
        examples, stand_ins = with_stand_ins(config, task_objs[kind], examples, tools)
      if kind == "world" and d.injection_share > 0:
        convs = injected_conversations(config, task_objs[kind], examples, tools["search"])
      elif "python" in tools:
        convs = [tool_use.conversation(ex, tools.get("search")) for ex in examples]
      else:
        convs = [ex.conversation() for ex in examples]
      convs += stand_ins
    else:
      if kind not in sources_lib.kinds():
        raise UserError(f"config.data.sources: unknown conversation source kind {kind!r}; known: "
                        f"{', '.join(sources_lib.kinds() + sorted(task_objs))}")
      if not path:
        raise UserError(f"config.data.sources: {kind!r} needs a file: {kind}:path/to/file[*weight]")
      if not os.path.exists(path):
        raise UserError(f"config.data.sources: no such file {path!r} for source {kind!r}")
      convs = list(sources_lib.source(kind, path))
    mixed.append((convs, weight))
  return sources_lib.mix(mixed, config.seed)


def with_stand_ins(config, task, examples: list, tools: dict) -> tuple[list, list]:
  """(the first half of the world's `examples`, conversations standing in for the rest): questions
  about `data.made_up_people` people of another synthetic world, searched with their pages
  (`tool_use.stand_in_conversations`)."""
  d = config.data
  if d.made_up_people < 0 or "search" not in tools:
    raise UserError(f"config.data.made_up_people={d.made_up_people}: needs a count ≥ 0 and "
                    "config.tools.use with search (the stand-ins are tool-use conversations)")
  half = len(examples) // 2
  stand_ins = tool_use.stand_in_conversations(task, tools["search"], d.made_up_people, half, config.seed)
  print(f"sft data: {half} of {len(examples)} world conversations ask about {d.made_up_people} people of "
        f"another world instead", flush=True)
  return examples[:len(examples) - half], stand_ins


def injected_conversations(config, task, examples, search) -> list[list[dict]]:
  """The world's tool-use conversations through an index where `data.injection_share` of the pages
  that state no held-out fact carry a planted instruction; the replies ignore it (lm/injection.py)."""
  plants = injection.training_plants(task.examples("eval"), search.documents, config.seed,
                                     config.data.injection_share)
  convs, shown = injection.conversations(examples, injection.InjectedSearch(search, plants))
  print(f"sft data: {len(plants)} of {len(search.documents)} pages planted; {shown} of {len(convs)} world "
        f"conversations show an instruction", flush=True)
  return convs


def eval_examples(config, task_objs: dict) -> list:
  """Held-out prompts: every held-out fact of the world task, `eval.examples` of the others."""
  names = [n for n in config.eval.tasks.split(",") if n]
  return [ex for n in names
          for ex in task_objs[n].examples("eval", None if n == "world" else config.eval.examples, 0)]


def validate(config) -> None:
  loop.validate_train(config)
  if config.data.layout not in ("pack", "pad"):
    raise UserError(f"config.data.layout: {config.data.layout!r} is not one of pack, pad")
  share = config.data.injection_share
  if share:
    if not 0 < share <= 1:
      raise UserError(f"config.data.injection_share={share} must be in [0, 1]")
    if "search" not in config.tools.use.split(",") or "python" not in config.tools.use.split(","):
      raise UserError(f"config.data.injection_share={share} needs config.tools.use=python,search (instructions "
                      f"are planted in search outputs)")
    if "world" not in [kind for kind, _, _ in parse_sources(config.data.sources)]:
      raise UserError(f"config.data.injection_share={share} needs a 'world' source in config.data.sources "
                      f"(its conversations search)")
  if config.data.chat_template not in chat_template.FORMATS:
    raise UserError(f"config.data.chat_template: {config.data.chat_template!r} is not one of "
                    f"{', '.join(chat_template.FORMATS)}")


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Everything is checked before anything under the workdir is written."""
  validate(config)
  sharding.initialize_distributed()
  # A resumed run keeps its own model config and tokenizer, whatever the source has become since
  # (its parameters come from its own checkpoint, so the source is not read again).
  source = init_from.own_checkpoint(workdir) or init_from.resolve(config.init_from)
  with config.unlocked():
    config.model = init_from.merge_model_config(config.model, source)
  model_lib.validate(config.model)
  tok = source.tokenizer
  own = config.data.chat_template == "own"
  if own and (tok is None or "<|im_end|>" not in getattr(tok, "special_ids", {})):
    raise UserError("config.init_from: the source's tokenizer has no chat special tokens "
                    "(<|im_start|>, <|im_end|>, ...); pretrain with experiments.train_tokenizer's BPE, "
                    "or train an imported model in its own format (config.data.chat_template='model')")
  if tok is None:
    raise UserError(f"config.data.chat_template='model': the init_from source {source.path} has no "
                    f"tokenizer.json; copy the model's tokenizer files next to its config.json")
  fmt = chat_template.chat_format(config.data.chat_template, tok)
  if config.tools.use and config.data.chat_template != "own":
    raise UserError("config.tools.use: tool calls are rendered in the project's own format only; "
                    "set config.data.chat_template=own or config.tools.use=''")
  if tok.vocab_size > config.model.vocab_size:
    raise UserError(f"config.init_from: tokenizer vocabulary {tok.vocab_size} exceeds the model's "
                    f"{config.model.vocab_size}")
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  sharding.check_model_fits(config.model, mesh)
  if config.model.positions == "learned" and config.train.seq_len > config.model.max_len:
    raise UserError(f"config.train.seq_len={config.train.seq_len} exceeds the model's max_len "
                    f"{config.model.max_len}")
  task_objs = make_tasks(config)
  tools = make_tools(config)
  convs = read_conversations(config, task_objs, tools)
  held = [corpus.is_heldout(json.dumps(c, sort_keys=True), config.data.val_fraction) for c in convs]
  heldout = [c for c, h in zip(convs, held) if h]
  train = [c for c, h in zip(convs, held) if not h]
  if not heldout or not train:
    raise UserError(f"config.data.val_fraction={config.data.val_fraction} leaves "
                    f"{len(heldout)} held-out and {len(train)} training conversations of {len(convs)}; "
                    f"use more data or another fraction")
  train_rows = sft_data.SFTRows(sft_data.RenderedSet(train, tok, fmt), config.train.seq_len,
                                config.data.layout, config.seed)
  val_rows = sft_data.SFTRows(sft_data.RenderedSet(heldout, tok, fmt), config.train.seq_len, "pack", 0)
  examples = eval_examples(config, task_objs)
  loop.lock_workdir(workdir)  # everything checked: from here on this job owns the workdir
  stats = {f"data/{k}": v for k, v in train_rows.stats.items() if isinstance(v, (int, float))}
  print("sft data: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in stats.items()), flush=True)
  return Run(config, workdir, mesh, source, tok, fmt, train_rows, val_rows, examples, task_objs, stats,
             tools)


def evaluate(run: Run, stage: loop.Stage, params) -> dict:
  cfg = run.config
  host_batch = cfg.train.batch_size // cfg.train.grad_accum // jax.process_count()
  ds = sft_data.dataset(run.val_rows, host_batch, seed=0, shuffle=False, repeat=True)
  ev = loop.held_out(stage, params, iter(ds), cfg.train.eval_batches)
  metrics = {"val/loss": ev["loss"], "val/accuracy": ev["accuracy"]}
  if run.eval_examples:
    run.last_rows = evaluation.run_tasks(stage.model, params, run.tokenizer, run.eval_examples,
                                         lambda text, ex: run.tasks[ex.task].reward(text, ex),
                                         max_new_tokens=cfg.eval.max_new_tokens, mesh=run.mesh,
                                         rules=stage.rules, fmt=run.fmt, tools=run.tools,
                                         max_tool_tokens=cfg.tools.max_tool_tokens)
    metrics.update(evaluation.summarize(run.last_rows))
    if jax.process_index() == 0:
      with open(os.path.join(run.workdir, "eval.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in run.last_rows)
  return metrics


def samples(run: Run) -> list[tuple[str, str]]:
  """A few graded replies of the last evaluation, spread over the tasks, for the report."""
  stride = max(1, len(run.last_rows) // 6)
  return [(ex.messages[-1]["content"] + " → ", f"{r['reply']!r} (reference {r['reference']!r})")
          for ex, r in list(zip(run.eval_examples, run.last_rows))[::stride][:6]]


def train_loop(run: Run, extra_sections=None) -> dict:
  """`extra_sections()` → more markdown for report.md (experiments/refusal.py's)."""
  cfg = run.config
  stage = loop.stage_from_config(cfg, run.mesh, losses.next_token, forward=losses.token_logprobs)
  host_batch = cfg.train.batch_size // jax.process_count()
  batches = iter(sft_data.dataset(run.train_rows, host_batch, seed=cfg.seed,
                                  prefetch_threads=cfg.data.prefetch_threads))
  hooks = loop.Hooks(
      batches=batches,
      tokens_in=lambda b: int((b["segment_ids"] > 0).sum()),  # real tokens, not padding
      evaluate=lambda params: evaluate(run, stage, params),
      samples=lambda params: samples(run),
      init_params=lambda: init_from.load_params(run.source, cfg.model, stage.abstract_state().params),
      title="SFT",
      report_sections=lambda final: "\n\n".join(
          [report_sections(run, final)] + ([extra_sections()] if extra_sections else [])))
  return loop.run(stage, cfg, run.workdir, run.tokenizer, hooks)


def report_sections(run: Run, final: dict) -> str:
  lines = ["## Held-out tasks (greedy)", "", "| metric | value |", "|---|---|"]
  lines += [f"| {k[5:]} | {v:.3f} |" for k, v in sorted(final.items()) if k.startswith("eval/")]
  lines += ["", "## Data", "", "| | |", "|---|---|"]
  lines += [f"| {k[5:]} | {v:.4g} |" for k, v in run.stats.items()]
  return "\n".join(lines)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  return train_loop(setup(config, workdir))


if __name__ == "__main__":  # flags defined here: other experiments import this module (refusal.py)
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")
  cli.run(lambda: setup(_CONFIG.value, _WORKDIR.value), train_loop)
