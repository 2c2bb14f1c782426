"""Run the web pipeline (datatrove, FineWeb recipe): WARC → clean text, with statistics.

  python -m experiments.prepare_data --config=configs/data.py:synthetic --workdir=runs/data
  python -m experiments.prepare_data --config=configs/data.py:cc_sample --workdir=runs/cc
  python -m experiments.prepare_data --config=configs/data.py:warc --workdir=/shared/fw \\
      --config.web.warc_path=/data/crawl --config.web.executor=slurm --config.web.dry_run=True

With web.warc_path="" it first writes the synthetic crawl to <workdir>/crawl.
Kept documents land in <workdir>/clean/{jsonl,parquet}; <workdir>/web_stats.json,
web_report.md and web_filters.png give documents in/kept/dropped per filter and
throughput; when the WARC folder has labels.jsonl (the synthetic crawl does),
also per-filter precision and recall against them. A local run starts from
scratch each time (the pipeline's intermediate files are in <workdir>/web).
"""
from __future__ import annotations

import os
import shutil
import time

import ml_collections
from absl import flags
from ml_collections import config_flags

from lm.errors import UserError
from lm import cli
from lm.prep import synthetic, web, web_stats


def crawl_source(config, workdir: str) -> tuple[list[str], dict | None]:
  """(WARC files, labels or None); generates the synthetic crawl when no path is given."""
  path = config.web.warc_path
  if not path:
    s = config.synthetic
    path = os.path.join(workdir, "crawl")
    summary = synthetic.write_crawl(path, seed=s.seed, n_files=s.n_files, n_people=s.n_people,
                                    n_cities=s.n_cities, n_companies=s.n_companies)
    print(f"synthetic crawl: {summary['pages']} pages in {s.n_files} WARC files → {path}", flush=True)
  warcs = web.find_warcs(path)
  folder = path if os.path.isdir(path) else os.path.dirname(warcs[0])
  labels = synthetic.read_labels(folder) if os.path.exists(os.path.join(folder, "labels.jsonl")) else None
  return warcs, labels


def validate(config) -> None:
  w = config.web
  if w.executor not in ("local", "slurm", "ray"):
    raise UserError(f"config.web.executor: {w.executor!r} is not one of local, slurm, ray")
  if w.workers < 1:
    raise UserError(f"config.web.workers must be ≥ 1, got {w.workers}")
  if not 0 <= w.language_threshold < 1:
    raise UserError(f"config.web.language_threshold must be in [0, 1), got {w.language_threshold}")
  bad = set(w.output_formats) - {"jsonl", "parquet"}
  if bad or "jsonl" not in w.output_formats:
    raise UserError(f"config.web.output_formats: {tuple(w.output_formats)} must include jsonl (parquet optional)")
  web.validate_languages(w.languages)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  warcs, labels = crawl_source(config, workdir)
  work = os.path.join(workdir, "web")
  if config.web.executor == "local" and os.path.exists(work):
    shutil.rmtree(work)  # datatrove skips finished tasks; a changed config must not reuse them
  executors = web.make_executors(config.web, web.build_stages(config.web, warcs, work), work)
  if config.web.executor != "local":
    if config.web.dry_run:
      plan = web.dry_run(executors, os.path.join(workdir, f"{config.web.executor}_plan"))
      print("\n".join(["dry run, nothing launched:", *plan]), flush=True)
      return {"plan": plan}
    executors[-1].run()  # each executor launches what it depends on first
    print(f"launched on {config.web.executor}; statistics appear in {work}/logs when the jobs finish")
    return {}
  start = time.perf_counter()
  for ex in executors:
    ex.run()
  seconds = time.perf_counter() - start
  rows = web_stats.step_table(work)
  web_stats.check_table(rows)
  scores = web_stats.score_labels(work, labels) if labels else None
  throughput = {"seconds": seconds, "docs_per_s": rows[0]["in"] / seconds, "workers": config.web.workers,
                "executor": "local", "warc_files": len(warcs)}
  report = web_stats.write_report(workdir, rows, scores, throughput)
  for name in ("jsonl", "parquet"):
    src = web.path(work, name)
    dst = os.path.join(workdir, "clean", name)
    if os.path.exists(src):
      shutil.rmtree(dst, ignore_errors=True)
      shutil.copytree(src, dst)
  print(report, flush=True)
  return {"steps": rows, "labels": scores, "throughput": throughput}


_CONFIG = config_flags.DEFINE_config_file("config", None, "Data config file (configs/data.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Data workdir shared by the data experiments.")


if __name__ == "__main__":
  # The whole job runs in cli.run's setup phase: a user error anywhere is one line, exit 2.
  cli.run(lambda: main(_CONFIG.value, _WORKDIR.value), lambda _: None)
