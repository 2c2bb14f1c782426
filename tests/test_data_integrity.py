"""Data integrity: damaged token shards and unreadable or fruitless WARCs fail (or pass) in one line."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from lm import tokenizer as tokenizer_lib
from lm.data import shards
from lm.prep import web
from tests.conftest import ROOT, env, shared_file, snapshot


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


@pytest.fixture
def shard_dir(tmp_path):
  tok = tokenizer_lib.load_tokenizer("byte")
  docs = [list(f"document number {i}, some text".encode()) for i in range(200)]
  d = str(tmp_path / "shards")
  meta = shards.write_shards(docs, tok, d, shard_tokens=2000)
  assert len(meta["shards"]) > 1
  return d


def test_meta_records_sizes_hashes_and_tokenizer(shard_dir):
  meta = shards.read_meta(shard_dir)
  for s in meta["shards"]:
    data = open(os.path.join(shard_dir, s["file"]), "rb").read()
    assert s["bytes"] == len(data) == s["num_tokens"] * 2 and s["sha256"] == hashlib.sha256(data).hexdigest()
  view = shards.TokenShards(shard_dir)
  tok_file = os.path.join(shard_dir, meta["tokenizer"])
  assert meta["tokenizer_fingerprint"] == view.tokenizer_fingerprint == shards.tokenizer_fingerprint(tok_file)
  assert view.verify() == len(meta["shards"])


def test_shard_cut_in_half_is_a_one_line_error_at_open(shard_dir):
  meta = shards.read_meta(shard_dir)
  bad = os.path.join(shard_dir, meta["shards"][1]["file"])
  before = snapshot(shard_dir)
  with open(bad, "r+b") as f:
    f.truncate(os.path.getsize(bad) // 2)
  with pytest.raises(shards.UserError) as e:
    shards.TokenShards(shard_dir, verify=False)  # the size check needs no hashing
  msg = str(e.value)
  assert "\n" not in msg and repr(bad) in msg and "experiments.tokenize_data" in msg
  after = snapshot(shard_dir)
  assert {k for k in before if before[k] != after.get(k)} == {os.path.relpath(bad, shard_dir)}


def test_flipped_byte_passes_open_fails_verify(shard_dir):
  meta = shards.read_meta(shard_dir)
  bad = os.path.join(shard_dir, meta["shards"][2]["file"])
  before = snapshot(shard_dir)
  with open(bad, "r+b") as f:
    f.seek(7)
    b = f.read(1)
    f.seek(7)
    f.write(bytes([b[0] ^ 0x01]))
  view = shards.TokenShards(shard_dir, verify=False)  # same size: the cheap check passes
  with pytest.raises(shards.UserError) as e:
    view.verify()
  msg = str(e.value)
  assert "\n" not in msg and repr(bad) in msg and "sha256" in msg and "experiments.tokenize_data" in msg
  with pytest.raises(shards.UserError, match="sha256"):
    shards.TokenShards(shard_dir)  # small folders are hashed on open
  after = snapshot(shard_dir)
  assert {k for k in before if before[k] != after.get(k)} == {os.path.relpath(bad, shard_dir)}


def test_old_meta_without_checksums_still_loads(shard_dir):
  path = os.path.join(shard_dir, shards.META)
  with open(path) as f:
    meta = json.load(f)
  expected_fp = meta.pop("tokenizer_fingerprint")
  for s in meta["shards"]:
    del s["bytes"], s["sha256"]
  with open(path, "w") as f:
    json.dump(meta, f)
  view = shards.TokenShards(shard_dir)
  assert view.verify() == 0 and view.tokenizer_fingerprint == expected_fp
  assert sum(a.size for a in view.arrays) == meta["num_tokens"]
  bad = os.path.join(shard_dir, meta["shards"][0]["file"])
  with open(bad, "r+b") as f:  # the size check still works from num_tokens × itemsize
    f.truncate(10)
  with pytest.raises(shards.UserError) as e:
    shards.TokenShards(shard_dir)
  assert repr(bad) in str(e.value)


def test_tokenizer_bytes_check(shard_dir):
  view = shards.TokenShards(shard_dir)
  with open(view.tokenizer_path, "rb") as f:
    shards.check_tokenizer_bytes(shard_dir, f.read(), "checkpoint 'x'")
  with pytest.raises(shards.UserError) as e:
    shards.check_tokenizer_bytes(shard_dir, b'{"kind": "byte", "vocab_size": 300}', "checkpoint 'x'")
  assert "\n" not in str(e.value) and "tokenizer mismatch" in str(e.value) and repr(shard_dir) in str(e.value)


# --- the web pipeline ---------------------------------------------------------------------------

def _write_warc(path, pages):
  from warcio.statusandheaders import StatusAndHeaders
  from warcio.warcwriter import WARCWriter
  with open(path, "wb") as f:
    w = WARCWriter(f, gzip=True)
    for url, html in pages:
      hh = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
      w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=hh))


def _prepare(workdir, *overrides):
  return subprocess.run([sys.executable, "-m", "experiments.prepare_data", "--config=configs/data.py:warc",
                         f"--workdir={workdir}", "--config.web.tasks=0", "--config.web.output_formats=('jsonl',)",
                         *overrides], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)


def test_warc_problem_checks_only_the_header(tmp_path):
  good = str(tmp_path / "good.warc.gz")
  _write_warc(good, [("http://example.com/", "<html><body>hi</body></html>")])
  assert web.warc_problem(good) is None
  (tmp_path / "text.warc.gz").write_bytes(b"hello, not gzip\n" * 10)
  assert "not gzip" in web.warc_problem(str(tmp_path / "text.warc.gz"))
  (tmp_path / "empty.warc.gz").write_bytes(gzip.compress(b""))
  assert web.warc_problem(str(tmp_path / "empty.warc.gz"))
  (tmp_path / "junk.warc.gz").write_bytes(gzip.compress(b"GET / HTTP/1.1\r\n\r\n" * 5))
  assert web.warc_problem(str(tmp_path / "junk.warc.gz"))
  with pytest.raises(shards.UserError, match="text.warc.gz"):
    web.check_warcs([good, str(tmp_path / "text.warc.gz")], strict=True)
  assert web.check_warcs([good, str(tmp_path / "text.warc.gz")], strict=False)[0] == [good]


def test_nothing_survives_writes_zero_report_and_exits_0(tmp_path):
  crawl = tmp_path / "crawl"
  crawl.mkdir()
  _write_warc(crawl / "one.warc.gz", [("http://example.com/a", "<html><body><p>Too short.</p></body></html>")])
  before = snapshot(crawl)
  r = _prepare(tmp_path / "run", f"--config.web.warc_path={crawl}")
  assert r.returncode == 0, r.stderr[-3000:]
  lines = [l for l in r.stdout.splitlines() if l.startswith("no document survived the filters")]
  assert len(lines) == 1 and "removed the most" in lines[0], r.stdout[-2000:]
  stats = json.loads((tmp_path / "run" / "web_stats.json").read_text())
  assert stats["steps"][0]["in"] == 1 and stats["steps"][-1]["kept"] == 0
  assert sum(s["dropped"] for s in stats["steps"]) == 1
  assert "0 kept" in (tmp_path / "run" / "web_report.md").read_text()
  assert "Traceback" not in r.stderr
  assert snapshot(crawl) == before


def test_unreadable_warc_is_skipped_or_strict_error(tmp_path):
  """A non-gzip .warc.gz is caught up front (skipped, or with strict_inputs the run stops before writing);
  a truncated one is read up to the damage and named on one line."""
  crawl = tmp_path / "crawl"
  crawl.mkdir()
  for name in ("cc-sample-resiliparse.warc.gz", "cc-sample-dolma-0000.warc.gz"):
    shutil.copy(shared_file(name), crawl / name)
  (crawl / "x.warc.gz").write_bytes(b"this is not a gzip file\n" * 100)
  data = (crawl / "cc-sample-dolma-0000.warc.gz").read_bytes()
  (crawl / "cut.warc.gz").write_bytes(data[:len(data) // 2])  # passes the header check, fails mid-file
  before = snapshot(crawl)

  strict = tmp_path / "strict"
  r = _prepare(strict, f"--config.web.warc_path={crawl}", "--config.web.strict_inputs=True")
  assert r.returncode == 2, r.stderr[-2000:]
  last = _last_line(r.stderr)
  assert last.startswith("error:") and "x.warc.gz" in last and "config.web.strict_inputs" in last
  assert not strict.exists()  # stopped before anything was written

  run = tmp_path / "run"
  r = _prepare(run, f"--config.web.warc_path={crawl}")
  assert r.returncode == 0, r.stderr[-3000:]
  warned = [l for l in r.stdout.splitlines() if l.startswith("warning: skipping WARC")]
  assert len(warned) == 1 and "x.warc.gz" in warned[0] and "not gzip" in warned[0]
  cut = [l for l in r.stdout.splitlines() if l.startswith("warning: WARC")]
  assert len(cut) == 1 and "cut.warc.gz" in cut[0] and "skipped the rest" in cut[0], r.stdout[-2000:]
  stats = json.loads((run / "web_stats.json").read_text())
  assert stats["throughput"]["warc_files"] == 3 and stats["steps"][0]["in"] >= 10
  assert stats["steps"][-1]["kept"] >= 5  # as test_web's run of the two samples
  assert snapshot(crawl) == before
