"""SFT data: chat-format readers (real files and malformed ones), mixing, packing, resumable batches."""
import gzip
import json

import numpy as np
import pytest

from lm import conversation
from lm.data import conversations as convs
from lm.data import sft
from lm.tokenizer import ByteTokenizer
from tests.conftest import shared_file

TOK = ByteTokenizer()
KEYS = {"inputs", "targets", "loss_mask", "positions", "segment_ids"}  # what lm.losses.next_token reads


def write_lines(path, lines):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return str(path)


def test_sharegpt_real_file():
  got = list(convs.source("sharegpt", shared_file("sharegpt-dummy-conversations.json")))
  assert len(got) == 500
  assert got[0][:2] == [
      {"role": "user", "content": "Who are you?"},
      {"role": "assistant", "content": "I am Vicuna, a language model trained by researchers "
                                       "from Large Model Systems Organization (LMSYS)."}]


def test_sharegpt_errors_name_file_and_line(tmp_path):
  ok = {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"},
                                     {"from": "human", "value": "unanswered"}]}
  bad = {"id": "b", "conversations": [{"from": "robot", "value": "hi"}]}
  path = write_lines(tmp_path / "s.json", ["[", json.dumps(ok) + ",", json.dumps(bad), "]"])
  it = convs.sharegpt(path)
  assert next(it) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
  with pytest.raises(ValueError, match=rf"^{path}:3: unknown speaker 'robot'"):
    next(it)
  path = write_lines(tmp_path / "t.json", ["[", json.dumps(ok) + ",", '{"id": "c", "conversations": [}', "]"])
  with pytest.raises(ValueError, match=rf"^{path}:3: not valid JSON"):
    list(convs.sharegpt(path))


def test_messages_jsonl(tmp_path):
  good = [{"role": "user", "content": "2+2?"},
          {"role": "assistant", "content": "", "tool_call": {"name": "python", "arguments": "2+2"}},
          {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4"}]
  path = write_lines(tmp_path / "m.jsonl.gz", [json.dumps({"messages": good}), "",
                                                json.dumps({"messages": [{"role": "tool", "content": "4"}]})])
  it = convs.source("messages", path)
  assert next(it) == good
  with pytest.raises(ValueError, match=rf"^{path}:3: conversation: message 0: tool message without"):
    next(it)
  path = write_lines(tmp_path / "n.jsonl", [json.dumps({"messages": good}), "{not json"])
  with pytest.raises(ValueError, match=rf"^{path}:2: not valid JSON"):
    list(convs.messages_jsonl(path))


def test_gsm8k_annotations_become_tool_calls():
  every = list(convs.source("gsm8k", shared_file("gsm8k-train.jsonl")))
  assert len(every) == 7473  # every problem's annotations parse and render-validate
  first = every[0]
  assert first[0]["role"] == "user" and first[0]["content"].startswith("Natalia sold clips")
  calls = [m["tool_call"]["arguments"] for m in first if "tool_call" in m]
  outputs = [m["content"] for m in first if m["role"] == "tool"]
  assert calls == ["48/2", "48+24"] and outputs == ["24", "72"]
  assert first[1]["content"] == "Natalia sold 48/2 = "
  assert first[-1] == {"role": "assistant", "content": "72 clips altogether in April and May.\n#### 72"}
  r = conversation.render(first, TOK)
  assert TOK.decode(r.ids_T[r.mask_T == 1]) == (
      "Natalia sold 48/2 = <|python_start|>48/2<|python_end|>24 clips in May.\nNatalia sold 48+24 = "
      "<|python_start|>48+24<|python_end|>72 clips altogether in April and May.\n#### 72<|im_end|>")


def test_gsm8k_errors(tmp_path):
  path = write_lines(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "<<1+1=2>>2\n#### 2"}),
                                            json.dumps({"question": "q", "answer": "x <<1+1>> y\n#### 2"})])
  with pytest.raises(ValueError, match=rf"^{path}:2: calculator annotation <<1\+1>> has no"):
    list(convs.gsm8k(path))
  path = write_lines(tmp_path / "h.jsonl", [json.dumps({"question": "q", "answer": "no final"})])
  with pytest.raises(ValueError, match=rf"^{path}:1: answer has no"):
    list(convs.gsm8k(path))


def msg(role, text, rank=None, replies=(), deleted=False):
  return {"role": role, "text": text, "rank": rank, "deleted": deleted, "replies": list(replies)}


def test_oasst_follows_best_rank(tmp_path):
  tree = msg("prompter", "Q1", replies=[
      msg("assistant", "A1 rank1", rank=1),
      msg("assistant", "A1 deleted best", rank=0, deleted=True),
      msg("assistant", "A1 rank0", rank=0, replies=[
          msg("prompter", "Q2 no answer"),
          msg("prompter", "Q2", replies=[msg("assistant", "A2 unranked first"), msg("assistant", "A2 b")]),
          msg("prompter", "Q2 later", replies=[msg("assistant", "A2 c")])]),
      msg("assistant", "A1 unranked")])
  unanswered = msg("prompter", "nobody replied")
  path = write_lines(tmp_path / "o.jsonl.gz", [json.dumps({"message_tree_id": "t", "prompt": tree}),
                                                json.dumps({"message_tree_id": "u", "prompt": unanswered}),
                                                json.dumps({"message_tree_id": "v"})])
  it = convs.source("oasst", path)
  assert [(m["role"], m["content"]) for m in next(it)] == [
      ("user", "Q1"), ("assistant", "A1 rank0"), ("user", "Q2"), ("assistant", "A2 unranked first")]
  with pytest.raises(ValueError, match=rf"^{path}:3: no \"prompt\" message"):
    next(it)


def test_oasst_real_file():
  path = shared_file("oasst2-ranked-trees.jsonl.gz")
  got = list(convs.oasst(path))
  assert 100 < len(got) < 551  # most trees are unanswered prompts
  with gzip.open(path, "rt") as f:
    trees = [json.loads(line)["prompt"] for line in f]
  usable = lambda m: not m["deleted"] and m.get("review_result") is not False  # noqa: E731
  answered = [t for t in trees
              if usable(t) and any(r["role"] == "assistant" and usable(r) for r in t["replies"])]
  assert len(got) == len(answered)
  for tree, c in zip(answered, got):
    ranked = [r for r in tree["replies"] if r.get("rank") is not None and usable(r)]
    if ranked:
      assert c[1]["content"] == min(ranked, key=lambda r: r["rank"])["text"]
  assert 0 < len(list(convs.oasst(path, lang="en"))) < len(got)


def test_source_registry_and_mix(tmp_path):
  with pytest.raises(ValueError, match="unknown conversation source kind 'nope'; known: gsm8k, messages"):
    convs.source("nope", "x")
  convs.register_source("constant", lambda path, n=2: iter([[{"role": "assistant", "content": path}]] * n))
  assert len(list(convs.source("constant", "p", n=3))) == 3
  a = [[{"role": "assistant", "content": f"a{i}"}] for i in range(100)]
  b = [[{"role": "assistant", "content": f"b{i}"}] for i in range(10)]
  mixed = convs.mix([(a, 0.5), (b, 3.0)], seed=0)
  assert mixed == convs.mix([(a, 0.5), (b, 3.0)], seed=0) != convs.mix([(a, 0.5), (b, 3.0)], seed=1)
  names = [c[0]["content"][0] for c in mixed]
  assert names.count("a") == 50 and names.count("b") == 30
  assert 14 <= names[:40].count("b") <= 16  # spread evenly (30 of 80), not in blocks
  assert len({c[0]["content"] for c in mixed if c[0]["content"][0] == "a"}) == 50


@pytest.fixture(scope="module")
def sharegpt_rendered():
  return sft.RenderedSet(convs.sharegpt(shared_file("sharegpt-dummy-conversations.json")), TOK)


def test_packed_rows_hold_whole_conversations(sharegpt_rendered):
  r = sharegpt_rendered
  rows = sft.SFTRows(r, seq_len=512, mode="pack", seed=0)
  whole = {r.ids[s:s + n].tobytes(): r.mask[s:s + n] for s, n in zip(r.starts_N, r.lengths_N)}
  seen = 0
  for k in range(len(rows)):
    ex = rows[k]
    assert {k: v.shape for k, v in ex.items()} == {k: (512,) for k in KEYS}
    assert ex["loss_mask"].dtype == np.float32 and ex["inputs"].dtype == np.int32
    ids_L = np.concatenate([ex["inputs"], ex["targets"][-1:]])
    mask_L = np.concatenate([[0.0], ex["loss_mask"]])
    last_seg = 0 if ex["targets"][-1] == TOK.pad_id else ex["segment_ids"][-1]  # not in the example
    seg_L = np.concatenate([ex["segment_ids"], [last_seg]])
    np.testing.assert_array_equal(ex["inputs"][1:], ex["targets"][:-1])
    for s in range(1, seg_L.max() + 1):
      span = np.flatnonzero(seg_L == s)
      ids = ids_L[span]
      assert ids[0] == TOK.bos_id and ids.tobytes() in whole  # a whole rendered conversation
      np.testing.assert_array_equal(mask_L[span][1:], whole[ids.tobytes()][1:])
      pos = ex["positions"][span[span < 512]]
      np.testing.assert_array_equal(pos, np.arange(pos.size))
      seen += 1
    pad = ex["segment_ids"] == 0
    assert (ex["inputs"][pad] == TOK.pad_id).all()
    assert (ex["loss_mask"][ex["targets"] == TOK.pad_id] == 0).all()
  assert seen == len(r) == 500
  assert rows.stats["truncated"] == 0


def test_loss_mask_is_only_assistant_tokens():
  c = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}]
  rows = sft.SFTRows(sft.RenderedSet([c, c], TOK), seq_len=128, mode="pack", seed=0)
  ex = rows[0]
  assert TOK.decode(ex["targets"][ex["loss_mask"] == 1]) == "Hi there<|im_end|>" * 2
  assert ex["segment_ids"].max() == 2 and rows.stats["rows"] == 1


def test_packing_beats_padding_and_reports_truncation(sharegpt_rendered):
  packed = sft.SFTRows(sharegpt_rendered, 512, "pack", seed=0).stats
  padded = sft.SFTRows(sharegpt_rendered, 512, "pad", seed=0).stats
  assert packed["tokens"] == padded["tokens"] and packed["rows"] < padded["rows"]
  assert packed["padding_fraction"] < 0.15 < 0.5 < padded["padding_fraction"]
  short = sft.SFTRows(sharegpt_rendered, 64, "pack", seed=0)
  assert short.stats["truncated"] == int((sharegpt_rendered.lengths_N > 65).sum()) > 0
  assert short.stats["truncated_tokens"] > 0 and all(
      short[i]["segment_ids"].max() >= 1 for i in range(len(short)))


def test_best_fit_is_deterministic_and_respects_capacity():
  lengths = np.random.default_rng(0).integers(1, 50, 300)
  bins = sft.best_fit_decreasing(lengths, 64, seed=1)
  assert bins == sft.best_fit_decreasing(lengths, 64, seed=1)
  assert sorted(i for b in bins for i in b) == list(range(300))
  assert max(lengths[b].sum() for b in bins) <= 64
  assert len(bins) <= int(np.ceil(lengths.sum() / 64 * 1.1))


def test_iterator_state_resumes_exactly(sharegpt_rendered):
  rows = sft.SFTRows(sharegpt_rendered, 256, "pack", seed=0)
  ds = sft.dataset(rows, host_batch=16, seed=3, process_index=0, process_count=1)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(40)]  # crosses epoch boundaries
  it2 = iter(ds)
  it2.set_state(json.loads(json.dumps(state)))
  for a in expected:
    b = next(it2)
    assert a.keys() == b.keys() == KEYS
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_hosts_get_disjoint_rows():
  c = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "ok " * (i % 7)}]
       for i in range(100)]
  rows = sft.SFTRows(sft.RenderedSet(c, TOK), 64, "pad", seed=0)
  seen = [{row.tobytes() for b in sft.dataset(rows, 8, seed=0, repeat=False, process_index=h, process_count=2)
           for row in b["inputs"]} for h in range(2)]
  assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 48  # 50 each, ragged batch dropped


def test_gsm8k_with_a_path_is_the_file_bare_gsm8k_the_task(tmp_path):
  # "gsm8k" names both a conversation source and a task: a path keeps the file (with its tool calls).
  # In a child process: experiments.sft defines absl flags that experiments.chat (imported by other
  # test files in this process) defines too.
  import subprocess
  import sys
  from tests.conftest import ROOT, env
  path = write_lines(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "1+1 = <<1+1=2>>2\n#### 2"})])
  code = f"""
from configs import sft as sft_config
from experiments import sft as sft_exp
path = {str(path)!r}
config = sft_config.get_config("tiny")
config.data.sources, config.eval.tasks = f"gsm8k:{{path}}*1,arithmetic*1", ""
config.data.examples_per_task = 3
task_objs = sft_exp.make_tasks(config)
assert sorted(task_objs) == ["arithmetic"], sorted(task_objs)
got = sft_exp.read_conversations(config, task_objs)
assert sum(any("tool_call" in m for m in c) for c in got) == 1 and len(got) == 4
assert sft_exp.is_task_source("gsm8k", "") and not sft_exp.is_task_source("gsm8k", path)
assert sft_exp.is_task_source("arithmetic", "") and not sft_exp.is_task_source("oasst", path)
"""
  out = subprocess.run([sys.executable, "-c", code], env=env(), cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
