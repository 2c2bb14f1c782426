"""Preference data: the ranking readers on the real shared files and on malformed lines (file:line),
rows cut to length, and rankings kept whole in every microbatch (lm/data/rankings.py, ranking_rows.py)."""
import collections
import gzip
import json
import re

import numpy as np
import pytest

from lm.data import ranking_rows, rankings
from lm.errors import UserError
from lm.tokenizer import ByteTokenizer
from tests.conftest import shared_file


def test_hh_pairs_from_the_shared_file():
  path = shared_file("hh-rlhf-harmless-base-test.jsonl.gz")
  skipped = collections.Counter()
  data = list(rankings.source("hh", path, skipped))
  assert len(data) == 2312 and not skipped
  assert all(r.ranks == (0, 1) and r.prompt[-1]["role"] == "user" for r in data)
  first = json.loads(gzip.open(path, "rt").readline())
  assert data[0].prompt[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
  assert first["chosen"].endswith(data[0].responses[0]) and first["rejected"].endswith(data[0].responses[1])
  assert data[0].responses[0].startswith("No, sorry!")
  # Transcripts that repeat "Assistant:" still give alternating turns (merged, not dropped).
  assert all(a["role"] != b["role"] for r in data for a, b in zip(r.prompt, r.prompt[1:]))


def test_oasst_ranked_groups_from_the_shared_file():
  path = shared_file("oasst2-ranked-trees.jsonl.gz")
  skipped = collections.Counter()
  data = list(rankings.source("oasst", path, skipped))
  assert collections.Counter(len(r.responses) for r in data) == {2: 77, 3: 122, 4: 8, 7: 1}
  assert sum(len(r.pairs()) for r in data) == 512
  assert skipped == {"a single usable ranked reply": 2}  # a group left with one reply after deletions
  for r in data:
    assert sorted(set(r.ranks)) == list(range(max(r.ranks) + 1))   # dense, 0 best
    roles = [m["role"] for m in r.prompt]
    assert roles[::2] == ["user"] * len(roles[::2]) and roles[1::2] == ["assistant"] * len(roles[1::2])
  english = list(rankings.source("oasst", path, lang="en"))
  assert 0 < len(english) < len(data)


def test_ranked_jsonl_reader(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text(json.dumps({"prompt": "Name a colour.", "responses": ["red", "blue", "1"],
                              "ranking": [1, [0], 2]}) + "\n\n" +
                  json.dumps({"prompt": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi"}],
                              "responses": ["Hello.", "Hi!", "Go away."], "ranking": [[0, 1], 2]}) + "\n")
  a, b = rankings.source("ranked", str(path))
  assert a.ranks == (1, 0, 2) and a.prompt == ({"role": "user", "content": "Name a colour."},)
  assert b.ranks == (0, 0, 1) and sorted(b.pairs()) == [(0, 2), (1, 2)]


@pytest.mark.parametrize("line,needle", [
    ({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 0]}, "names response 0 twice"),
    ({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0]}, r"leaves responses \[1\] unranked"),
    ({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]}, "not a response index 0..1"),
    ({"prompt": "p", "responses": ["a", "b"], "ranking": "0,1"}, "must be a list"),
    ({"prompt": "p", "responses": ["only one"], "ranking": [0]}, "at least 2 strings"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "responses": ["a", "b"], "ranking": [0, 1]}, "prompt"),
    ("not json {", "not valid JSON"),
])
def test_a_bad_ranking_line_names_file_and_line(tmp_path, line, needle):
  path = tmp_path / "bad.jsonl"
  good = json.dumps({"prompt": "p", "responses": ["a", "b"], "ranking": [1, 0]})
  path.write_text(good + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
  with pytest.raises(UserError, match=needle) as e:
    list(rankings.source("ranked", str(path)))
  assert str(e.value).startswith(f"{path}:2") and "\n" not in str(e.value)


def test_a_conversation_longer_than_a_row_keeps_the_bos_the_prompt_end_and_the_response():
  ids = np.arange(100, 140, dtype=np.int32)   # BOS 100, prompt 100..129, response 130..139
  out, prompt_cut, response_cut = ranking_rows.fit(ids, 30, 24)
  assert prompt_cut and not response_cut
  assert out.tolist() == [100] + list(range(117, 130)) + list(range(130, 140))
  out, prompt_cut, response_cut = ranking_rows.fit(ids, 10, 16)  # the response alone overflows:
  assert (prompt_cut, response_cut) == (True, True)                # the prompt keeps a quarter of the row
  assert out.tolist() == [100, 107, 108, 109] + list(range(110, 122))
  out, *cut = ranking_rows.fit(ids, 30, 40)
  assert out.tolist() == ids.tolist() and cut == [False, False]


def toy_rankings(n, seed=0, sizes=(2, 3, 5)):
  rng = np.random.default_rng(seed)
  out = []
  for g in range(n):
    k = sizes[g % len(sizes)]
    out.append(rankings.Ranking(({"role": "user", "content": f"q{g}"},), tuple(f"r{g}.{i}" for i in range(k)),
                                tuple(rankings.dense_ranks(rng.permutation(k).tolist(), k))))
  return out


@pytest.mark.parametrize("grad_accum,hosts", [(1, 1), (2, 1), (2, 2)])
def test_rankings_stay_whole_in_every_microbatch(grad_accum, hosts):
  """Packed chunks, interleaved for lm.train's microbatch split (every n-th row), ids unique across hosts."""
  data = toy_rankings(30)
  rows = ranking_rows.RankedRows(data, ByteTokenizer(), 32, rows_per_chunk=8)
  assert sum(len(c) for c in rows.chunks) == 30 and rows.stats["pairs"] == sum(len(r.pairs()) for r in data)
  batches = [next(iter(ranking_rows.dataset(rows, grad_accum, seed=0, process_index=p, process_count=hosts)))
             for p in range(hosts)]
  glob = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}   # host slices, in order
  assert glob["inputs"].shape == (8 * grad_accum * hosts, 32)
  for j in range(grad_accum):                                               # lm.train._split_microbatches
    micro = {k: v.reshape(-1, grad_accum, *v.shape[1:])[:, j] for k, v in glob.items()}
    for g in set(micro["group"].tolist()) - {0}:
      rows_g = micro["group"] == g
      owners = {re.search(r"r(\d+)\.\d", ByteTokenizer().decode(t[m > 0].tolist())).group(1)
                for t, m in zip(micro["inputs"][rows_g], micro["mask"][rows_g])}
      assert len(owners) == 1                                   # one ranking per group id ...
      owner = data[int(owners.pop())]
      assert sorted(micro["rank"][rows_g]) == sorted(owner.ranks)  # ... with all its responses
  # Padding rows carry no pairs; every real row is one response.
  assert ((glob["group"] == 0) == (glob["mask"].sum(1) == 0)).all()


def test_a_ranking_larger_than_a_microbatch_is_a_config_error():
  with pytest.raises(UserError, match="config.train.batch_size.*7 responses"):
    ranking_rows.RankedRows(toy_rankings(3, sizes=(7,)), ByteTokenizer(), 32, rows_per_chunk=4)
