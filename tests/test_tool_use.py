"""Tool-use SFT conversations: the exact call format the engine runs, outputs that the real tools
print, loss on the call and the answer but never on the output, and evaluation through the engine."""
import re

import numpy as np
import pytest

from lm import conversation, engine, evaluation, refusal, tasks, tools
from lm.tasks import tool_use
from lm.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def search():
  return tools.for_conversation(["search"])["search"]


def examples():
  return (tasks.get("arithmetic").examples("train", 6, 0) + tasks.get("spelling").examples("train", 8, 0)
          + tasks.get("world").examples("train", 6, 0))


def test_tool_conversations_render_with_the_loss_on_call_and_answer_only(search):
  tok = ByteTokenizer()
  sp = tok.special_ids
  for ex in examples():
    conv = tool_use.conversation(ex, search)
    call, output, answer = conv[-3:]
    assert call["tool_call"]["name"] == ("search" if ex.task == "world" else "python")
    ids, mask = conversation.render(conv, tok)
    start, end = conversation.TOOLS[call["tool_call"]["name"]]
    i, j = ids.tolist().index(sp[start]), ids.tolist().index(sp[end])
    o0, o1 = ids.tolist().index(sp["<|output_start|>"]), ids.tolist().index(sp["<|output_end|>"])
    assert mask[i:j + 1].all() and not mask[o0:o1 + 1].any() and mask[o1 + 1:].all()
    assert tok.decode(ids[i + 1:j]) == call["tool_call"]["arguments"]
    # The rewarded answer is read off the tool's output.
    assert tasks.get(ex.task).reward(answer["content"], ex) == 1.0 or ex.task == "world"
    if ex.task == "world":
      assert ex.meta["entity"] in output["content"]
      # The fact when the output states it, else "not found": never an answer without evidence.
      found = re.search(rf"(?<!\w){re.escape(ex.reference)}(?!\w)", output["content"])
      assert answer["content"] == (ex.target if found else tool_use.NOT_FOUND)
      assert refusal.is_refusal(tool_use.NOT_FOUND)


def test_world_answers_follow_the_search_output():
  ex = tasks.get("world").examples("train", 1, 0)[0]
  stated = tool_use.conversation(ex, lambda q: f"[1] Page (u)\n... {ex.meta['entity']}: {ex.reference}.")
  missed = tool_use.conversation(ex, lambda q: f"[1] Page (u)\n... {ex.meta['entity']} is someone.")
  assert stated[-1]["content"] == ex.target and missed[-1]["content"] == tool_use.NOT_FOUND


def test_python_outputs_are_what_the_tools_print():
  run = tools.for_conversation(["python"])["python"]
  for ex in examples():
    if ex.task == "world":
      continue
    name, code = tool_use.call_for(ex)
    assert run(code) == tool_use.python_output(ex) == ex.reference, code
  assert tools.PythonCalls.is_arithmetic("347*28") and not tools.PythonCalls.is_arithmetic('print("a")')
  assert not tools.PythonCalls.is_arithmetic("'a'*3")


def test_evaluation_runs_the_tools():
  """A random model that calls the tool (`<|python_start|>` and `<|python_end|>` are bytes it emits
  anyway): rows record the calls, their outputs, and the reward reads only the assistant's words."""
  from tests.test_engine import CallingTokenizer, make
  model, params = make()
  exs = tasks.get("arithmetic").examples("eval", 4, 0)
  prompts = [conversation.render_prompt(ex.messages, ByteTokenizer()).tolist() for ex in exs]
  free = engine.rollout(model, params, ByteTokenizer(), prompts, 16, temperature=0.0)
  tok = CallingTokenizer(int(free.tokens_BN[0, 2]), start_id=int(free.tokens_BN[0, 0]))
  rows = evaluation.run_tasks(model, params, tok, exs, lambda text, ex: float("OUT" in text),
                              max_new_tokens=16, batch_size=4, tools={"python": lambda a: "OUT"}, prompts=prompts)
  assert rows[0]["calls"] and rows[0]["outputs"][0] == "OUT" and rows[0]["score"] == 0.0
  assert evaluation.summarize(rows)["eval/tool_calls"] >= 0.25
  assert all(np.isfinite(r["tokens"]) for r in rows)


def test_sft_config_with_tools_makes_tool_conversations():
  """configs/sft.py:tools → SFT conversations answered through the tools (in a child process:
  experiments.sft defines absl flags that other experiment modules also define)."""
  import subprocess
  import sys
  from tests.conftest import ROOT, env
  code = """
from configs import sft as sft_config
from experiments import sft
config = sft_config.get_config("tools")
config.data.examples_per_task = 20
convs = sft.read_conversations(config, sft.make_tasks(config), sft.make_tools(config))
calls = [m["tool_call"]["name"] for c in convs for m in c if "tool_call" in m]
print(len(convs), calls.count("search"), calls.count("python"))
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.splitlines()[-1].split() == ["60", "20", "40"]
  assert "10 of 20 world conversations ask about 300 people of another world" in out.stdout


def test_stand_ins_are_new_names_searched_in_their_own_pages(search):
  """The made-up people's conversations: names no entity of the world has, the asked name copied
  into the query, the reply the page's fact when the output states it and "not found" otherwise."""
  task = tasks.get("world")
  world_names = {e["name"] for kind in ("person", "city", "company") for e in task.world.entities(kind)}
  convs = tool_use.stand_in_conversations(task, search, people=60, n=120, seed=0)
  assert convs == tool_use.stand_in_conversations(task, search, people=60, n=120, seed=0)
  names, found = set(), 0
  for conv in convs:
    (question,), call, output, reply = conv[:1], conv[1], conv[2]["content"], conv[3]["content"]
    name, _, _ = call["tool_call"]["arguments"].partition(" " + next(
        w for w in tool_use.SEARCH_WORDS.values() if call["tool_call"]["arguments"].endswith(w)))
    assert name in question["content"] and name not in world_names
    names.add(name)
    if reply == tool_use.NOT_FOUND:
      continue
    found += 1
    assert name in output  # the answer comes from the page about them, which the world's index lacks
    assert not any(d.title == name or name in d.text for d in search.documents)
  assert len(names) >= 40 and 0.3 * len(convs) < found < 0.9 * len(convs)


def test_tools_long_preset_spells_made_up_words_through_python():
  """configs/sft.py:tools_long = the tools preset with twice the steps of half the rows and 2000 made-up
  words in the spelling lessons: most spelling conversations then copy a made-up word into the call."""
  import subprocess
  import sys
  from tests.conftest import ROOT, env
  code = """
from configs import sft as sft_config
from experiments import sft
from lm.tasks import spelling
short, config = sft_config.get_config("tools"), sft_config.get_config("tools_long")
print(config.train.steps, 2 * short.train.steps, config.train.batch_size * 2, short.train.batch_size,
      config.tools.to_dict() == short.tools.to_dict(), config.tasks.spelling.made_up_words)
config.data.examples_per_task = 40
convs = sft.read_conversations(config, sft.make_tasks(config), sft.make_tools(config))
made = set(spelling.made_up(2000))
calls = [m["tool_call"]["arguments"] for c in convs for m in c if "tool_call" in m and m["tool_call"]["name"] == "python"
         and any(w in c[0]["content"] for w in ("letter", "Spell", "spell"))]
print(len(calls), sum(any(f'"{w}"' in a for w in made) for a in calls))
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  head, counts = lines[0], lines[-1]
  steps, doubled, rows, short_rows, same_tools, words = head.split()
  assert steps == doubled and rows == short_rows and same_tools == "True" and words == "2000"
  n, with_made_up = map(int, counts.split())
  assert n >= 20 and with_made_up >= n // 2, out.stdout
