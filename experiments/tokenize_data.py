"""Tokenize cleaned text into train/val token shards for pretraining.

  python -m experiments.tokenize_data --config=configs/data.py:synthetic --workdir=runs/data

Splits the documents (same source as experiments.train_tokenizer) by content
hash, encodes them in config.shards.workers processes with a progress bar, and
writes <workdir>/shards/{train,val}/ (each with meta.json and tokenizer.model),
the folder experiments.pretrain takes as --config.data.path. Prints and saves
(shards/tokenize_report.json) the throughput in MB/s. Shards written with a
different vocabulary are an error, not overwritten. Each shard's size and
sha256 are in meta.json (with the tokenizer's fingerprint); the finished
folders are re-read and checked against them before this exits, and opening
them for training checks sizes (and, up to 256 MiB of shards, the hashes).
"""
from __future__ import annotations

import json
import os
import random

import ml_collections
from absl import flags
from ml_collections import config_flags

from lm.errors import MissingFile, UserError
from lm import cli
from lm import tokenizer as tokenizer_lib
from lm.data import corpus, shards
from lm.prep import copy_drills, synthetic, tokenize_shards
from lm.tasks import world


def tokenizer_path(config, workdir: str) -> str:
  path = config.shards.tokenizer or os.path.join(workdir, "tokenizer", "tokenizer.model")
  if not os.path.exists(path):
    raise MissingFile(f"config.shards.tokenizer: {path!r} not found (run experiments.train_tokenizer "
                            f"first or set --config.shards.tokenizer)")
  return path


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  cfg = config.shards
  tok_path = tokenizer_path(config, workdir)
  docs = list(tokenize_shards.source_documents(tokenize_shards.text_path(config, workdir), config.tokenizer.extra,
                                               cfg.extra_fraction))
  train, val = corpus.split(docs, cfg.val_fraction)
  if not train or not val:
    raise UserError(f"config.shards.val_fraction={cfg.val_fraction} leaves {len(train)} train / "
                     f"{len(val)} val documents; need both")
  corpus_train = train
  if cfg.corpus_repeats != 1 or cfg.copy_drills:
    if not 1 <= cfg.corpus_repeats <= 1000:
      raise UserError(f"config.shards.corpus_repeats={cfg.corpus_repeats} is not in [1, 1000]")
    # Copy drills go into training only (the held-out loss stays a measure of the corpus). Each drill is
    # written once and the corpus corpus_repeats times, so a run reads its pages many times but sees
    # every drill about once: a drill seen again would be recalled, not copied.
    drills = (copy_drills.documents(cfg.copy_drills, seed=config.synthetic.seed,
                                    pieces=copy_drills.word_pieces(tokenizer_lib.load_tokenizer(tok_path)))
              if cfg.copy_drills else [])
    train = train * cfg.corpus_repeats + drills
    random.Random(f"shards/{config.synthetic.seed}").shuffle(train)
  out = os.path.join(workdir, "shards")
  report = {}
  for name, split_docs in (("train", train), ("val", val)):
    meta = tokenize_shards.tokenize_split(split_docs, tok_path, os.path.join(out, name), workers=cfg.workers,
                                          shard_tokens=cfg.shard_tokens, desc=f"tokenize {name}")
    report[name] = {k: meta[k] for k in ("num_docs", "num_tokens", "vocab_size", "bytes", "seconds",
                                         "mb_per_s", "workers")}
    print(f"{name}: {meta['num_docs']} docs, {meta['num_tokens']:,} tokens, "
          f"{meta['bytes'] / meta['num_tokens']:.2f} bytes/token, {meta['mb_per_s']:.2f} MB/s "
          f"with {cfg.workers} workers", flush=True)
  for name in ("train", "val"):  # what is on disk is what meta.json describes
    shards.TokenShards(os.path.join(out, name), verify=True)
  with open(os.path.join(out, "tokenize_report.json"), "w") as f:
    json.dump(report, f, indent=1)
  world_file = os.path.join(workdir, "crawl", "world.json")
  if os.path.exists(world_file):  # how often each fact is stated in what pretraining will read
    # per pass over the pages (corpus_repeats multiplies every count alike)
    counts = synthetic.count_exposures(corpus_train, world.world_from_file(world_file))
    with open(os.path.join(out, "train", "exposures.json"), "w") as f:
      json.dump([{"entity": e, "attribute": a, "count": n} for (e, a), n in sorted(counts.items())], f)
  print(f"shards → {out} (use --config.data.path={out})", flush=True)
  return report


_CONFIG = config_flags.DEFINE_config_file("config", None, "Data config file (configs/data.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Data workdir shared by the data experiments.")


if __name__ == "__main__":
  # The whole job runs in cli.run's setup phase: a user error anywhere is one line, exit 2.
  cli.run(lambda: main(_CONFIG.value, _WORKDIR.value), lambda _: None)
