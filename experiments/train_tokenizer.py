"""Train the sentencepiece BPE tokenizer on cleaned text.

  python -m experiments.train_tokenizer --config=configs/data.py:synthetic --workdir=runs/data

Reads <workdir>/clean/jsonl (the output of experiments.prepare_data) or
config.tokenizer.text, plus the interpreter's documentation with
config.tokenizer.extra=python_docs, holds out a share of documents by content
hash, trains on the rest, and writes <workdir>/tokenizer/tokenizer.model and
tokenizer_report.json (vocabulary, special token ids, bytes per token on the
held-out documents, on an unseen synthetic world and on config.tokenizer.report_files
such as tinyshakespeare, a sample encoding). Takes seconds at vocab 4096.
"""
from __future__ import annotations

import json
import os
import time

import ml_collections
from absl import flags
from ml_collections import config_flags

from lm import cli
from lm import tokenizer as tokenizer_lib
from lm.data import corpus
from lm.prep import synthetic
from lm.prep import tokenize_shards


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  cfg = config.tokenizer
  docs = list(tokenize_shards.source_documents(tokenize_shards.text_path(config, workdir), cfg.extra))
  train, heldout = corpus.split(docs, cfg.heldout_fraction)
  budget, kept = cfg.max_chars, []
  for d in train:
    if budget <= 0:
      break
    kept.append(d)
    budget -= len(d)
  start = time.perf_counter()
  tok = tokenizer_lib.train_sentencepiece(kept, cfg.vocab_size)
  seconds = time.perf_counter() - start
  out = os.path.join(workdir, "tokenizer")
  os.makedirs(out, exist_ok=True)
  tok.save(os.path.join(out, tok.file_name))
  compression = {"synthetic_unseen_world": tokenize_shards.bytes_per_token(
      tok, list(synthetic.clean_documents(seed=1)))}
  for path in cfg.report_files:
    compression[os.path.basename(path)] = (tokenize_shards.bytes_per_token(tok, list(corpus.file_documents(path)))
                                           if os.path.exists(path) else "missing")
  sample = "<|im_start|>user<|im_sep|>What is 12 + 30?<|im_end|> café 🎉"
  report = {"vocab_size": tok.vocab_size, "special_ids": tok.special_ids, "train_docs": len(kept),
            "train_chars": sum(map(len, kept)), "train_seconds": seconds, "heldout_docs": len(heldout),
            "heldout_bytes_per_token": tokenize_shards.bytes_per_token(tok, heldout) if heldout else None,
            "bytes_per_token": compression,
            "sample": {"text": sample, "pieces": [tok.decode([i]) for i in tok.encode(sample)]}}
  with open(os.path.join(out, "tokenizer_report.json"), "w") as f:
    json.dump(report, f, indent=1, ensure_ascii=False)
  print(f"tokenizer: vocab {tok.vocab_size}, trained on {report['train_chars'] / 1e6:.1f}M chars in "
        f"{seconds:.1f}s, held-out bytes/token {report['heldout_bytes_per_token'] or float('nan'):.3f} "
        f"→ {out}/{tok.file_name}", flush=True)
  for name, value in compression.items():
    print(f"  bytes/token on {name}: {value if isinstance(value, str) else f'{value:.3f}'}", flush=True)
  return report


_CONFIG = config_flags.DEFINE_config_file("config", None, "Data config file (configs/data.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Data workdir shared by the data experiments.")


if __name__ == "__main__":
  # The whole job runs in cli.run's setup phase: a user error anywhere is one line, exit 2.
  cli.run(lambda: main(_CONFIG.value, _WORKDIR.value), lambda _: None)
