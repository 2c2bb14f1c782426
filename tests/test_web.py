"""Web pipeline: scored on the labelled synthetic crawl, run on real Common Crawl samples, errors, executors."""
import gzip
import glob
import ipaddress
import json
import os
import re
import subprocess
import sys

import pytest

from configs import data as data_config
from lm.prep import web
from tests.conftest import shared_file

REPO = os.path.join(os.path.dirname(__file__), "..")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")


def _prepare(workdir, *overrides, arg="synthetic"):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "experiments.prepare_data", f"--config=configs/data.py:{arg}",
                         f"--workdir={workdir}", *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


def _kept(workdir):
  docs = []
  for path in sorted(glob.glob(os.path.join(workdir, "clean", "jsonl", "*.jsonl.gz"))):
    with gzip.open(path, "rt") as f:
      docs += [json.loads(line) for line in f]
  return docs


def _check_counts(stats):
  steps = stats["steps"]
  assert steps[0]["in"] == steps[-1]["kept"] + sum(s["dropped"] for s in steps)
  for prev, row in zip(steps, steps[1:]):
    assert row["in"] == prev["kept"]


def _check_pii_replaced(docs):
  for d in docs:
    for ip in IPV4.findall(d["text"]):
      try:
        assert not ipaddress.ip_address(ip).is_global, (ip, d["metadata"]["url"])
      except ValueError:
        pass  # not an address (e.g. a version number)
    for email in EMAIL.findall(d["text"]):
      assert email.endswith(("@example.com", "@example.org")), (email, d["metadata"]["url"])


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("synthetic")
  r = _prepare(workdir, "--config.synthetic.n_people=120", "--config.synthetic.n_cities=20",
               "--config.synthetic.n_companies=16")
  assert r.returncode == 0, r.stderr[-3000:]
  with open(workdir / "web_stats.json") as f:
    return workdir, json.load(f)


def test_synthetic_precision_recall(synthetic_run):
  workdir, stats = synthetic_run
  s = stats["labels"]
  assert s["near_duplicates_removed"] >= 0.90
  assert s["non_english_removed"] >= 0.95
  assert s["blocklisted_removed"] == 1.0
  assert s["pii_in_kept_text"] == 0
  assert s["encyclopedia_kept"] >= 0.90
  assert s["filters"]["url"]["precision"] == 1.0 and s["filters"]["language"]["precision"] == 1.0
  assert s["filters"]["minhash"]["precision"] >= 0.9
  assert s["by_kind"]["non_html"] == {"read": 4}  # non-HTML responses never become documents
  _check_counts(stats)
  _check_pii_replaced(_kept(workdir))
  for name in ("web_report.md", "web_filters.png"):
    assert os.path.getsize(workdir / name) > 0
  assert "| minhash |" in (workdir / "web_report.md").read_text()
  assert glob.glob(str(workdir / "clean" / "parquet" / "*.parquet"))
  assert stats["throughput"]["docs_per_s"] > 0 and stats["throughput"]["workers"] == 2


def test_synthetic_kept_text_is_clean_prose(synthetic_run):
  workdir, _ = synthetic_run
  world = json.loads((workdir / "crawl" / "world.json").read_text())
  kept = {d["metadata"]["url"]: d["text"] for d in _kept(workdir)}
  person = world["people"][0]
  page = next(t for u, t in kept.items() if u.endswith("/people/" + person["name"].lower().replace(" ", "-")))
  assert person["employer"] in page and str(person["birth_year"]) in page
  assert "Privacy policy" not in page and "Sitemap" not in page  # site chrome removed by Trafilatura


def test_real_common_crawl_samples(tmp_path):
  for name in ("cc-sample-resiliparse.warc.gz", "cc-sample-dolma-0000.warc.gz"):
    shared_file(name)
  r = _prepare(tmp_path, arg="cc_sample")
  assert r.returncode == 0, r.stderr[-3000:]
  stats = json.loads((tmp_path / "web_stats.json").read_text())
  _check_counts(stats)
  steps = {s["step"]: s for s in stats["steps"]}
  assert steps["read"]["in"] >= 30
  assert steps["language"]["dropped"] >= 5          # the samples hold Chinese, Russian, German, Dutch pages
  kept = _kept(tmp_path)
  assert len(kept) >= 5
  assert all(d["metadata"]["language"] == "en" and d["metadata"]["language_score"] > 0.65 for d in kept)
  assert all(len(d["text"].split()) >= 50 for d in kept)
  _check_pii_replaced(kept)
  removed_langs = [json.loads(line)["metadata"]["language"]
                   for p in glob.glob(str(tmp_path / "web" / "removed" / "language" / "*.gz"))
                   for line in gzip.open(p, "rt")]
  assert "zh" in removed_langs


@pytest.mark.parametrize("overrides,key", [
    (["--config.web.warc_path=/nonexistent/crawl"], "config.web.warc_path"),
    (["--config.web.languages=('en','xx')"], "config.web.languages"),
    (["--config.web.executor=spark"], "config.web.executor"),
])
def test_user_errors_are_one_line(tmp_path, overrides, key):
  r = _prepare(tmp_path, *overrides)
  assert r.returncode != 0
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and key in last


@pytest.mark.parametrize("executor", ["slurm", "ray"])
def test_cluster_executors_dry_run(tmp_path, executor):
  cfg = data_config.get_config("warc")
  cfg.web.executor = executor
  warcs = [str(tmp_path / f"part-{i}.warc.gz") for i in range(3)]
  for w in warcs:
    open(w, "wb").close()
  stages = web.build_stages(cfg.web, warcs, str(tmp_path / "web"))
  executors = web.make_executors(cfg.web, stages, str(tmp_path / "web"))
  assert [type(e).__name__ for e in executors] == [f"{executor.capitalize()}PipelineExecutor"] * 5
  assert [e.world_size for e in executors] == [64, 64, 14, 1, 64]
  assert all(e.depends is p for e, p in zip(executors[1:], executors))
  plan = web.dry_run(executors, str(tmp_path / "plan"))
  assert len(plan) == 5 and "MinhashDedupFilter" in plan[-1]
  if executor == "slurm":
    script = (tmp_path / "plan" / "filter.slurm").read_text()
    assert "#SBATCH --partition=cpu" in script and "launch_pickled_pipeline" in script


def test_pii_formatter_replaces_unicode_emails_and_only_public_ips():
  f = web.pii_formatter()
  text = ("Write to jörg.ström@firma.example.de or bob@mail.example.net; "
          "server 81.23.145.7, printer 192.168.1.20, localhost 127.0.0.1.")
  out = f.format(text)
  assert "jörg" not in out and "bob@" not in out and "81.23.145.7" not in out
  assert "192.168.1.20" in out and "127.0.0.1" in out
  assert out.count("@example.") == 2


def test_prepare_data_without_the_web_packages_is_one_line(monkeypatch):
  """After only the first README command (.venv with requirements.txt), the data step says what to install."""
  import importlib.util
  from lm.errors import UserError
  from lm.prep import web
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fasttext" else real(name, *a))
  with pytest.raises(UserError, match=r"missing: fasttext\): pip install -r requirements-web.txt"):
    web.check_packages()
  monkeypatch.undo()
  web.check_packages()  # this environment has them
