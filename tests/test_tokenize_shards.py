"""Parallel tokenization into shards; the tokenizer travels with them; mismatches are errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lm import tokenizer as tokenizer_lib
from lm.data import shards
from lm.prep import synthetic, tokenize_shards

REPO = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def docs():
  return list(synthetic.clean_documents(n_people=60, n_cities=10, n_companies=8))


@pytest.fixture(scope="module")
def tok_path(docs, tmp_path_factory):
  tok = tokenizer_lib.train_sentencepiece(docs, 600)
  path = str(tmp_path_factory.mktemp("tok") / tok.file_name)
  tok.save(path)
  return path


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_decode_back_to_documents(docs, tok_path, tmp_path, workers):
  meta = tokenize_shards.tokenize_split(docs, tok_path, str(tmp_path), workers=workers, shard_tokens=5000)
  assert meta["num_docs"] == len(docs) and len(meta["shards"]) > 1 and meta["mb_per_s"] > 0
  view = shards.TokenShards(str(tmp_path))
  tok = tokenizer_lib.load_tokenizer(view.tokenizer_path)
  assert isinstance(tok, tokenizer_lib.SentencePieceTokenizer) and view.vocab_size == tok.vocab_size
  stream = np.concatenate([np.asarray(a) for a in view.arrays])
  starts = np.flatnonzero(stream == tok.bos_id).tolist() + [stream.size]
  decoded = [tok.decode(stream[a + 1:b].tolist()) for a, b in zip(starts[:-1], starts[1:])]
  assert decoded == docs


def test_vocab_mismatch_is_an_error(docs, tok_path, tmp_path):
  tokenize_shards.tokenize_split(docs[:20], tok_path, str(tmp_path), workers=1)
  other = tokenizer_lib.train_sentencepiece(docs, 700)
  other_path = str(tmp_path / "other.model")
  other.save(other_path)
  with pytest.raises(ValueError, match="vocabulary mismatch"):
    tokenize_shards.tokenize_split(docs[:20], other_path, str(tmp_path), workers=1)
  with pytest.raises(ValueError, match="vocabulary mismatch"):
    shards.check_vocab(other.vocab_size, shards.read_meta(str(tmp_path))["vocab_size"], "token shards")


def test_tokenizer_and_tokenize_experiments(docs, tmp_path):
  """train_tokenizer + tokenize from a cleaned-text folder; errors are one line and exit non-zero."""
  clean = tmp_path / "clean" / "jsonl"
  clean.mkdir(parents=True)
  import json
  with open(clean / "00000.jsonl", "w") as f:
    for d in docs:
      f.write(json.dumps({"text": d}) + "\n")
  env = dict(os.environ, PYTHONPATH=REPO)
  base = ["--config=configs/data.py:synthetic", f"--workdir={tmp_path}", "--config.tokenizer.vocab_size=512",
          "--config.tokenizer.extra=none"]
  run = lambda mod, *extra: subprocess.run([sys.executable, "-m", mod, *base, *extra], cwd=REPO, env=env,
                                           capture_output=True, text=True, timeout=300)
  r = run("experiments.tokenize_data")
  assert r.returncode != 0 and "config.shards.tokenizer" in r.stderr.strip().splitlines()[-1]
  r = run("experiments.train_tokenizer")
  assert r.returncode == 0, r.stderr
  assert os.path.exists(tmp_path / "tokenizer" / "tokenizer.model")
  r = run("experiments.tokenize_data")
  assert r.returncode == 0, r.stderr
  for split in ("train", "val"):
    meta = shards.read_meta(str(tmp_path / "shards" / split))
    assert meta["vocab_size"] == 512 and meta["tokenizer"] == "tokenizer.model"
  assert "MB/s" in r.stdout
  # copy drills join the training shards only; the held-out split is the corpus's own
  drilled = tmp_path / "drilled"
  r = subprocess.run([sys.executable, "-m", "experiments.tokenize_data", *base[:1], f"--workdir={drilled}",
                      f"--config.tokenizer.text={clean}", "--config.tokenizer.extra=none",
                      f"--config.shards.tokenizer={tmp_path / 'tokenizer' / 'tokenizer.model'}",
                      "--config.shards.copy_drills=20", "--config.shards.corpus_repeats=3"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  docs_in = lambda d, split: sum(x["num_docs"] for x in shards.read_meta(str(d / "shards" / split))["shards"])
  assert docs_in(drilled, "train") == 3 * docs_in(tmp_path, "train") + 20
  assert docs_in(drilled, "val") == docs_in(tmp_path, "val")
  r = run("experiments.train_tokenizer", "--config.tokenizer.text=/nonexistent/x.jsonl")
  assert r.returncode != 0 and "config.tokenizer.text" in r.stderr.strip().splitlines()[-1]
