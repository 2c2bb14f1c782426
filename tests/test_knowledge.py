"""Knowledge in context versus in weights: the oracle page, the prompt that carries it, the table, the command."""
import json
import subprocess
import sys

import pytest

from lm import conversation, knowledge, tokenizer as tokenizer_lib
from lm.tasks.world import WorldTask
from lm.tools.search import Document, Search
from tests.conftest import ROOT, env


@pytest.fixture(scope="module")
def world():
  return WorldTask(seed=0)


def test_the_oracle_is_the_page_that_states_the_fact_in_the_tools_format(world):
  search = Search.from_world(seed=0, k=1, snippet_chars=160)
  examples = world.examples("eval")
  outputs = knowledge.oracle_outputs(examples, search.documents)
  stated = [(ex, o) for ex, o in zip(examples, outputs) if o is not None]
  assert len(stated) > len(examples) // 2
  assert sum(ex.reference in o for ex, o in stated) >= 0.95 * len(stated)  # the snippet shows the fact
  for ex, o in stated:
    assert o.startswith("[1] ") and ex.meta["entity"] in o.split("\n")[0] + o
  never = [o for ex, o in zip(examples, outputs) if ex.meta["exposures"] == 0]
  assert sum(o is None for o in never) >= 0.8 * len(never)  # a fact no text states has no page
  docs = [Document("A", "u1", "Ann Smith was born in 1950. She likes tea."), Document("B", "u2", "Nothing here.")]
  ex = next(e for e in world.examples("eval") if e.meta["attribute"] == "birth_year")
  ex.meta = {**ex.meta, "entity": "Ann Smith"}
  ex.reference = "1950"
  assert knowledge.stating_documents(ex, docs) == [docs[0]]
  ex.reference = "195"
  assert knowledge.stating_documents(ex, docs) == []  # whole numbers only


def test_context_prompt_ends_inside_the_turn_after_the_forced_output(world):
  tok = tokenizer_lib.ByteTokenizer()
  ex = world.examples("eval")[0]
  prompt = knowledge.context_prompts([ex], ["[1] Page (u)\nthe fact"], tok)[0]
  sp = tok.special_ids
  assert prompt[-1] == sp["<|output_end|>"] and sp["<|search_start|>"] in prompt
  full = conversation.render(ex.messages + [
      {"role": "assistant", "content": "", "tool_call": {"name": "search", "arguments": knowledge.tool_use.call_for(ex)[1]}},
      {"role": "tool", "content": "[1] Page (u)\nthe fact"}, {"role": "assistant", "content": ex.target}], tok)
  assert full.ids_T[:len(prompt)].tolist() == prompt


def test_table_is_mean_and_std_over_seeds():
  row = lambda g, s: {"group": g, "score": s}
  seeds = [{"weights": [row("once", 0.0), row("8+", 1.0)], "context": [row("once", 1.0)]},
           {"weights": [row("once", 1.0), row("8+", 1.0)], "context": [row("once", 1.0)]}]
  lines, summary = knowledge.table(seeds)
  assert summary["weights/once"]["mean"] == 0.5 and summary["weights/once"]["std"] == 0.5
  assert summary["context/once"]["seeds"] == [1.0, 1.0] and "search/once" not in summary
  assert any(l.startswith("| once | 0.500 ± 0.500 (n=1) | 1.000 ± 0.000 (n=1) | — |") for l in lines)


def test_tool_task_table_pairs_each_seeds_sfts():
  without = [{"eval/arithmetic/accuracy": 0.0, "eval/spelling/count/accuracy": 0.25},
             {"eval/arithmetic/accuracy": 0.5, "eval/spelling/count/accuracy": 0.25}]
  with_tools = [{"eval/arithmetic/accuracy": 1.0, "eval/spelling/count/accuracy": 0.5},
                {"eval/arithmetic/accuracy": 1.0}]
  lines, summary = knowledge.tool_task_table(without, with_tools)
  assert "| multi-digit arithmetic | 0.250 ± 0.250 [0.000, 0.500] | 1.000 ± 0.000 [1.000, 1.000] | +0.750 |" in lines
  assert set(summary) == {"eval/arithmetic/accuracy"}  # a task some seed lacks is left out, not averaged short


def test_knowledge_command_writes_its_table(tmp_path, byte_base):
  out = tmp_path / "k"
  args = [sys.executable, "-m", "experiments.knowledge", f"--weights={byte_base}", f"--tools_model={byte_base}",
          f"--out={out}", "--max_new_tokens=8", "--batch=128"]
  # A pretraining run has no tool settings: the search output's budget must then be given.
  unknown = subprocess.run(args, env=env(), cwd=ROOT, timeout=300, capture_output=True, text=True)
  assert unknown.returncode == 2 and "no tools.max_tool_tokens" in unknown.stderr and "give --max_tool_tokens" in unknown.stderr
  res = subprocess.run(args + ["--max_tool_tokens=96"], env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-3000:]
  text = (out / "knowledge.md").read_text()
  assert "| seen in pretraining | weights | context | search |" in text and (out / "knowledge.png").exists()
  assert "cut at 96 tokens" in text and "snippets: passage, 160 characters" in text
  summary = json.loads((out / "knowledge.json").read_text())
  assert {"weights/all", "context/all", "search/all"} <= set(summary)
  assert len((out / "rows" / "0_search.jsonl").read_text().splitlines()) == len(WorldTask(seed=0).examples("eval"))
  bad = subprocess.run(args[:4] + [f"--tools_model={byte_base},{byte_base}", f"--out={out}"], env=env(), cwd=ROOT,
                       timeout=300, capture_output=True, text=True)
  assert bad.returncode == 2 and "pair them" in bad.stderr
