"""One command from WARC to a fine-tuned assistant (launch/pipeline.sh), and vocab mismatches caught."""
import os
import subprocess
import sys

import pytest

REPO = os.path.join(os.path.dirname(__file__), "..")


def _run(cmd, **env):
  full_env = dict(os.environ, PYTHONPATH=REPO, PYTHON=sys.executable, **env)
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_warc_to_pretraining_chain(tmp_path):
  data, run, sft = tmp_path / "data", tmp_path / "run", tmp_path / "sft"
  r = _run(["bash", "launch/pipeline.sh"], DATA=str(data), RUN=str(run), SFT=str(sft), STEPS="20", VOCAB="1024",
           SFT_STEPS="10")
  assert r.returncode == 0, r.stderr[-4000:]
  for path in ("web_report.md", "web_filters.png", "tokenizer/tokenizer.model", "shards/train/meta.json",
               "shards/val/tokenizer.model", "shards/train/exposures.json"):
    assert (data / path).exists(), path
  assert "Held-out tasks" in (sft / "report.md").read_text()
  import json
  world = json.loads((data / "crawl" / "world.json").read_text())
  designed = {(f["entity"], f["attribute"]): f["exposures"] for f in world["facts"]}
  measured = json.loads((data / "shards" / "train" / "exposures.json").read_text())
  assert measured and all(0 <= m["count"] <= designed[(m["entity"], m["attribute"])] for m in measured)

  from lm import checkpoint as ckpt_lib
  from lm import tokenizer as tokenizer_lib
  ck = ckpt_lib.Checkpointer(str(run / "checkpoints"), keep=1, every=1, async_save=False)
  step = ck.latest_step()
  assert step == 20
  _, record = ck.restore_meta(step)
  ck.close()
  tok = ckpt_lib.tokenizer_from_record(record, str(tmp_path / "restored"))
  assert isinstance(tok, tokenizer_lib.SentencePieceTokenizer) and tok.vocab_size == 1024
  assert record["file_name"] == "tokenizer.model"

  # Shards of another vocabulary against that checkpoint: a one-line error, non-zero exit.
  flags = ["--config=configs/data.py:synthetic", f"--workdir={data}", "--config.tokenizer.vocab_size=800"]
  other = tmp_path / "other"
  r = _run([sys.executable, "-m", "experiments.train_tokenizer", *flags])
  assert r.returncode == 0, r.stderr[-2000:]
  r = _run([sys.executable, "-m", "experiments.tokenize_data", *flags])
  assert r.returncode != 0 and "vocabulary mismatch" in r.stderr.strip().splitlines()[-1]
  r = _run([sys.executable, "-m", "experiments.tokenize_data", *flags[:1], f"--workdir={other}",
            f"--config.tokenizer.text={data}/clean/jsonl", f"--config.shards.tokenizer={data}/tokenizer/tokenizer.model"])
  assert r.returncode == 0, r.stderr[-2000:]
  r = _run([sys.executable, "-m", "experiments.pretrain", "--config=configs/pretrain.py:tiny", f"--workdir={run}",
            f"--config.data.path={other}/shards", "--config.train.steps=25"])
  assert r.returncode != 0 and "vocab" in r.stderr.strip().splitlines()[-1]
