"""Pretraining data: shards, packed rows with document boundaries, host split, resumable order."""
import json
import os

import ml_collections
import numpy as np
import pytest

from lm.data import corpus, shards
from lm.data import packed as data_lib
from lm.tokenizer import ByteTokenizer
from tests.conftest import shared_file


@pytest.fixture
def shard_dir(tmp_path):
  tok = ByteTokenizer()
  rng = np.random.default_rng(0)  # random letters: every packed row is distinct
  docs = [f"document number {i}: " + "".join(rng.choice(list("abcdefgh "), 20 + i % 30)) for i in range(200)]
  shards.write_shards((tok.encode(d) for d in docs), tok, str(tmp_path / "s"), shard_tokens=2000)
  return str(tmp_path / "s")


def test_shards_roundtrip_documents(shard_dir):
  tok = ByteTokenizer()
  ts = shards.TokenShards(shard_dir)
  assert len(ts.arrays) > 1 and ts.meta["num_docs"] == 200
  stream = np.concatenate(ts.arrays)
  assert stream.size == ts.num_tokens
  docs = tok.decode([t if t != tok.bos_id else 10 for t in stream[1:]]).split("\n")
  assert docs[0].startswith("document number 0: ") and len(docs) == 200


def test_packed_rows_and_document_boundaries(shard_dir):
  tok = ByteTokenizer()
  src = data_lib.PackedRows(shard_dir, seq_len=32)
  row = src[3]
  assert row.shape == (33,)
  ex = data_lib.MakeExample(tok.bos_id, document_mask=True).map(row)
  np.testing.assert_array_equal(ex["inputs"][1:], ex["targets"][:-1])
  bos = np.flatnonzero(ex["inputs"] == tok.bos_id)
  assert bos.size >= 1
  for b in bos:  # positions restart and the segment changes at every BOS
    assert ex["positions"][b] == 0
    if b > 0:
      assert ex["segment_ids"][b] == ex["segment_ids"][b - 1] + 1


def test_hosts_get_disjoint_rows_covering_the_epoch(shard_dir):
  seen = []
  for host in range(2):
    ds = data_lib.dataset(shard_dir, 32, host_batch=4, seed=1, shuffle=True, repeat=False,
                          document_mask=False, process_index=host, process_count=2)
    rows = [tuple(r) for b in ds for r in b["inputs"]]
    seen.append(set(rows))
  assert not seen[0] & seen[1]
  total = len(data_lib.PackedRows(shard_dir, 32))
  assert len(seen[0]) + len(seen[1]) >= total - 2 * 4  # only the ragged tail batches are dropped


def test_iterator_state_resumes_exactly(shard_dir):
  ds = data_lib.dataset(shard_dir, 32, 4, seed=3, shuffle=True, repeat=True, document_mask=False)
  it = iter(ds)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)["inputs"] for _ in range(20)]  # crosses an epoch boundary
  it2 = iter(ds)
  it2.set_state(json.loads(json.dumps(state)))
  got = [next(it2)["inputs"] for _ in range(20)]
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a, b)


def test_epochs_are_reshuffled(shard_dir):
  n = len(data_lib.PackedRows(shard_dir, 32))
  it = iter(data_lib.dataset(shard_dir, 32, 1, seed=0, shuffle=True, repeat=True, document_mask=False))
  first = [tuple(next(it)["inputs"][0]) for _ in range(n)]
  second = [tuple(next(it)["inputs"][0]) for _ in range(n)]
  assert sorted(first) == sorted(second) and first != second


def test_default_corpus_is_real_english():
  docs = list(corpus.default_documents())
  text = "\n".join(docs)
  assert len(text) > 1_000_000
  assert text.count(" the ") > 5000


def test_prepare_reads_text_and_caches(tmp_path):
  path = shared_file("tinyshakespeare.txt")
  cfg = ml_collections.ConfigDict(dict(path=path, text_field="text", val_fraction=0.05))
  tok = ByteTokenizer()
  train_dir, val_dir = data_lib.prepare(cfg, tok, str(tmp_path))
  n_train = shards.read_meta(train_dir)["num_tokens"]
  n_val = shards.read_meta(val_dir)["num_tokens"]
  assert 900_000 < n_train + n_val < 1_300_000 and 0.02 < n_val / (n_train + n_val) < 0.1
  mtime = os.path.getmtime(os.path.join(train_dir, "meta.json"))
  assert data_lib.prepare(cfg, tok, str(tmp_path)) == (train_dir, val_dir)
  assert os.path.getmtime(os.path.join(train_dir, "meta.json")) == mtime


def test_jsonl_and_parquet_sources(tmp_path):
  rows = [{"text": f"row {i} " * 20} for i in range(50)]
  with open(tmp_path / "a.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"text": [r["text"] for r in rows]}), tmp_path / "b.parquet")
  assert list(corpus.file_documents(str(tmp_path / "a.jsonl"))) == [r["text"] for r in rows]
  assert len(list(corpus.file_documents(str(tmp_path)))) == 100
  with pytest.raises(KeyError, match="data.text_field"):
    list(corpus.file_documents(str(tmp_path / "a.jsonl"), "content"))


def test_missing_path_is_a_clear_error(tmp_path):
  cfg = ml_collections.ConfigDict(dict(path=str(tmp_path / "nope.txt"), text_field="text", val_fraction=0.05))
  with pytest.raises(FileNotFoundError, match="config.data.path"):
    data_lib.prepare(cfg, ByteTokenizer(), str(tmp_path))
