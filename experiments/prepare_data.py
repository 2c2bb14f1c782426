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

Inputs: every WARC's first record header is read up front; an unreadable one
(not gzip, not a WARC) is reported on one line and skipped, or with
web.strict_inputs=True stops the run before anything is written. A WARC damaged
further in (truncated) is read up to the damage, and the reader logs it. When
no document survives the filters, the report is written with zero kept and the
run says which filter removed the most (exit 0).
"""
from __future__ import annotations

import glob
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
  """(readable WARC files, labels or None); generates the synthetic crawl when no path is given.

  Unreadable WARCs are reported and left out (a UserError under web.strict_inputs, before anything
  is written)."""
  path = config.web.warc_path
  if not path:
    os.makedirs(workdir, exist_ok=True)
    s = config.synthetic
    path = os.path.join(workdir, "crawl")
    summary = synthetic.write_crawl(path, seed=s.seed, n_files=s.n_files, n_people=s.n_people,
                                    n_cities=s.n_cities, n_companies=s.n_companies)
    print(f"synthetic crawl: {summary['pages']} pages in {s.n_files} WARC files → {path}", flush=True)
  warcs = web.find_warcs(path)
  folder = path if os.path.isdir(path) else os.path.dirname(warcs[0])
  warcs, bad = web.check_warcs(warcs, config.web.strict_inputs)
  for w, why in bad:
    print(f"warning: skipping WARC {w!r}: {why}", flush=True)
  labels = synthetic.read_labels(folder) if os.path.exists(os.path.join(folder, "labels.jsonl")) else None
  return warcs, labels


def validate(config) -> None:
  web.check_packages()
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
  warcs, labels = crawl_source(config, workdir)  # checks the inputs before anything is written
  os.makedirs(workdir, exist_ok=True)
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
  survived = True
  for ex in executors:
    ex.run()
    if ex is executors[0] and not glob.glob(os.path.join(web.path(work, "filtered"), "*")):
      survived = False  # the dedup stages would fail on an empty folder; there is nothing left to do
      break
  seconds = time.perf_counter() - start
  for line in web.damaged_warcs(work):
    print(f"warning: WARC {line}", flush=True)
  rows = web_stats.step_table(work, stages=("filter", "output") if survived else ("filter",))
  web_stats.check_table(rows)
  scores = web_stats.score_labels(work, labels) if labels else None
  throughput = {"seconds": seconds, "docs_per_s": rows[0]["in"] / seconds, "workers": config.web.workers,
                "executor": "local", "warc_files": len(warcs)}
  report = web_stats.write_report(workdir, rows, scores, throughput)
  for name in ("jsonl", "parquet"):
    src = web.path(work, name)
    dst = os.path.join(workdir, "clean", name)
    shutil.rmtree(dst, ignore_errors=True)  # a previous run's output must not pass for this one's
    if os.path.exists(src):
      shutil.copytree(src, dst)
  print(report, flush=True)
  if not survived:
    top = web_stats.top_filter(rows)
    most = f"{top['step']} removed the most ({top['dropped']} of {rows[0]['in']})" if top else \
        f"{rows[0]['in']} HTML documents were read"
    print(f"no document survived the filters: {most}; report in {os.path.join(workdir, 'web_report.md')}",
          flush=True)
  return {"steps": rows, "labels": scores, "throughput": throughput}


_CONFIG = config_flags.DEFINE_config_file("config", None, "Data config file (configs/data.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Data workdir shared by the data experiments.")


if __name__ == "__main__":
  # The whole job runs in cli.run's setup phase: a user error anywhere is one line, exit 2.
  cli.run(lambda: main(_CONFIG.value, _WORKDIR.value), lambda _: None)
