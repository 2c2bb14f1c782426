"""Data preparation: web pipeline, tokenizer training, token shards (one config, three experiments).

The whole chain on this CPU (≈3 min on 2 cores; see launch/pipeline.sh):
  python -m experiments.prepare_data    --config=configs/data.py:synthetic --workdir=runs/data_steps
  python -m experiments.train_tokenizer --config=configs/data.py:synthetic --workdir=runs/data_steps
  python -m experiments.tokenize_data   --config=configs/data.py:synthetic --workdir=runs/data_steps
  python -m experiments.pretrain --config=configs/pretrain.py:tiny --workdir=runs/tiny_bpe \\
      --config.data.path=runs/data_steps/shards

(its own workdirs: runs/data is launch/pipeline.sh's, runs/tiny the byte-level
first run's, whose vocabulary differs). What to expect in the data workdir:
crawl/ (the synthetic WARCs, labels.jsonl, world.json), clean/jsonl +
clean/parquet (kept documents, e-mails and public IPs replaced), web_stats.json
/ web_report.md / web_filters.png (documents in, kept, dropped by each filter;
for the synthetic crawl also precision and recall per filter against the labels:
near-duplicates, non-English and blocklisted pages removed, ≥90% of encyclopedia
pages kept), tokenizer/tokenizer.model with tokenizer_report.json (bytes per
token on held-out text), shards/{train,val}.

Args: `synthetic` (generate the synthetic crawl; the default), `cc_sample` (the
two real Common Crawl samples in ../shared/data), `warc` (your own WARCs:
--config.web.warc_path=/data/crawl/). Any key can be overridden.
"""
from __future__ import annotations

import os

import ml_collections

from lm.errors import UserError

ARGS = ("synthetic", "cc_sample", "warc")
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def get_config(arg: str = "synthetic") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise UserError(f"configs/data.py: unknown arg {arg!r}, choose one of {ARGS}")
  c = ml_collections.ConfigDict()

  c.synthetic = ml_collections.ConfigDict()
  c.synthetic.seed = 0              # the world and its crawl are a pure function of this
  c.synthetic.n_people = 96         # people (16 per exposure bucket 0, 1, 2, 4, 8, 16)
  c.synthetic.n_cities = 16         # cities
  c.synthetic.n_companies = 12      # companies (pages with e-mails and IPs)
  c.synthetic.n_files = 2           # WARC files the crawl is split into (one task each)

  c.web = ml_collections.ConfigDict()
  c.web.warc_path = ""              # WARC file, folder or glob; "" = generate the synthetic crawl
  c.web.strict_inputs = False      # True: an unreadable WARC stops the run (one line, nothing written);
  #                                 False: it is reported on one line and skipped
  c.web.languages = ("en",)         # fastText lid.176 codes to keep; the first one picks word tokenization
  c.web.language_threshold = 0.65   # minimum fastText score for a kept language
  c.web.favour_precision = True     # Trafilatura: less text, fewer boilerplate lines
  c.web.extract_timeout_s = 5.0     # Trafilatura per-document timeout (slow pages are skipped)
  c.web.minhash_ngrams = 5          # word n-grams hashed for near-dedup
  c.web.minhash_buckets = 14        # LSH bands
  c.web.minhash_hashes_per_bucket = 8  # rows per band (14 × 8 ≈ Jaccard 0.75 threshold)
  c.web.output_formats = ("jsonl", "parquet")  # clean/jsonl always; parquet optional
  c.web.executor = "local"          # local | slurm | ray
  c.web.workers = 2                 # local: parallel processes; ray: concurrent tasks
  c.web.tasks = 0                   # filter/output tasks; 0 = one per WARC file
  c.web.dry_run = False             # slurm/ray: build the executors, write the plan, launch nothing
  c.web.slurm = ml_collections.ConfigDict()
  c.web.slurm.partition = "cpu"     # sbatch --partition
  c.web.slurm.time = "04:00:00"     # sbatch --time per task
  c.web.slurm.cpus_per_task = 1     # sbatch --cpus-per-task
  c.web.slurm.mem_per_cpu_gb = 4    # sbatch --mem-per-cpu (URL blocklist needs ~1 GB)
  c.web.slurm.venv_path = ""        # virtualenv activated in the job ("" = none)
  c.web.ray = ml_collections.ConfigDict()
  c.web.ray.cpus_per_task = 1       # Ray task CPUs
  c.web.ray.mem_per_cpu_gb = 4      # Ray task memory per CPU

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_size = 4096     # sentencepiece BPE vocabulary, special tokens and 256 bytes included
  c.tokenizer.text = ""             # training text (file/folder of .txt/.jsonl/.parquet); "" = <workdir>/clean/jsonl
  c.tokenizer.extra = "python_docs" # python_docs: also the interpreter's docs (the embedded corpus) | none
  c.tokenizer.max_chars = 50_000_000  # training text cap (characters)
  c.tokenizer.heldout_fraction = 0.05  # documents held out for the bytes/token report
  c.tokenizer.report_files = (os.path.normpath(os.path.join(SHARED_DATA, "tinyshakespeare.txt")),)
  #                                 more texts whose bytes/token is reported (missing ones are noted)

  c.shards = ml_collections.ConfigDict()
  c.shards.tokenizer = ""           # tokenizer file; "" = <workdir>/tokenizer/tokenizer.model
  c.shards.val_fraction = 0.05      # held-out documents (split by content hash)
  c.shards.workers = 2              # tokenization processes
  c.shards.shard_tokens = 1 << 24   # tokens per shard file
  c.shards.extra_fraction = 1.0     # share of the tokenizer.extra corpus's documents put into the shards
  c.shards.copy_drills = 0          # copy-drill documents added to the training shards (lm/prep/copy_drills.py:
  #                                 made-up words used again and again, so a small model learns to copy)
  c.shards.corpus_repeats = 1       # the corpus's training documents written this many times (drills once each)
  #                                 (a synthetic crawl also gets <shards>/train/exposures.json: each fact's count)

  if arg == "cc_sample":
    c.web.warc_path = os.path.normpath(os.path.join(SHARED_DATA, "cc-sample-*.warc.gz"))
    c.tokenizer.vocab_size = 2048
  elif arg == "warc":
    c.web.warc_path = "/data/crawl"
    c.web.tasks = 64
    c.tokenizer.vocab_size = 32768
  return c
