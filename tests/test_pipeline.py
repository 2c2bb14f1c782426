"""The one-command pipeline (lm/pipeline.py) and its report card (lm/report_card.py).

Fast tests drive the pipeline with a fake stage runner that writes what each
experiment would (checkpoint folders, data files, rankings) in milliseconds;
one slow test runs the whole chain for real at shrunk sizes.
"""
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

from configs import pipeline as pipeline_config
from lm import pipeline, report_card
from lm.errors import UserError
from tests.conftest import ROOT, env


def _flag(argv, name):
  for a in argv:
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
  return None


class FakeRunner:
  """Does what each stage's command leaves behind, instantly; `fail` maps a module to an exit code
  (and a last log line), `short` makes a training module stop short of its steps yet exit 0."""

  def __init__(self, fail=None, short=()):
    self.calls, self.fail, self.short = [], dict(fail or {}), set(short)

  def __call__(self, argv, log_path):
    assert argv[:2] == [sys.executable, "-m"]
    module = argv[2]
    self.calls.append((module, _flag(argv, "workdir") or _flag(argv, "out")))
    with open(log_path, "a") as log:
      log.write("train: 50%|#####     | 5/10\rtrain: 100%|##########| 10/10\n")
      if module in self.fail:
        log.write("error: config.data.path: no such file 'x'\n")
        return self.fail[module]
    wd = _flag(argv, "workdir")
    if module == "experiments.tokenize_data":
      for split in ("train", "val"):
        os.makedirs(os.path.join(wd, "shards", split), exist_ok=True)
        open(os.path.join(wd, "shards", split, "meta.json"), "w").write("{}")
      open(os.path.join(wd, "shards", "train", "exposures.json"), "w").write("[]")
    elif module == "experiments.prepare_data":
      os.makedirs(os.path.join(wd, "crawl"), exist_ok=True)
      open(os.path.join(wd, "crawl", "world.json"), "w").write("{}")
    elif module == "experiments.gold_rankings":
      out = _flag(argv, "out")
      os.makedirs(os.path.dirname(out), exist_ok=True)
      open(out, "w").write("")
    elif module != "experiments.train_tokenizer":
      # the last --config.train.steps wins, as with absl flags
      steps = int([a for a in argv if a.startswith("--config.train.steps=")][-1].split("=")[1])
      os.makedirs(os.path.join(wd, "checkpoints", str(steps // 2 if module in self.short else steps)),
                  exist_ok=True)
    return 0


def set_keys(c, updates: dict):
  """The config with dotted keys set ({"grpo.steps": 8}), as --config.grpo.steps=8 would."""
  for k, v in updates.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def _config(**updates):
  return set_keys(pipeline_config.get_config("tiny"), updates)


def _run(tmp_path, runner, card=None, **updates):
  out = io.StringIO()
  ran = pipeline.run(_config(**updates), str(tmp_path), runner, log=out, card=card)
  return ran, out.getvalue()


def test_config_declares_every_stage_with_commented_keys():
  c = pipeline_config.get_config("tiny")
  assert c.stages.split(",") == list(pipeline.STAGES)
  source = open(pipeline_config.__file__).read()
  for stage in pipeline.STAGES:
    for key in c[stage]:
      assert re.search(rf"c\.{stage}\.{key} = .*#", source), f"{stage}.{key} has no comment"
  with pytest.raises(ValueError, match="unknown arg 'huge'"):
    pipeline_config.get_config("huge")


def test_plan_chains_each_stage_from_the_one_before(tmp_path):
  stages = {s.name: s for s in pipeline.plan(_config(), str(tmp_path))}
  cmd = lambda name, i=0: " ".join(stages[name].commands[i])  # noqa: E731
  wd = str(tmp_path)
  assert [c[0] for c in stages["data"].commands] == [
      "experiments.prepare_data", "experiments.train_tokenizer", "experiments.tokenize_data"]
  assert f"--config.data.path={wd}/data/shards" in cmd("base")
  assert "configs/sft.py:tools" in cmd("sft") and f"--config.init_from.workdir={wd}/base" in cmd("sft")
  assert f"--config.data.exposures={wd}/data/shards/train/exposures.json" in cmd("sft")
  assert f"--config.init_from.workdir={wd}/sft_arith" in cmd("grpo")
  assert "configs/sft.py:tiny" in cmd("sft_chat")
  assert f"--policy={wd}/sft_chat" in cmd("rankings") and f"--out={wd}/rankings/seed0.jsonl" in cmd("rankings")
  assert f"--config.data.path={wd}/rankings/seed0.jsonl" in cmd("reward_model")
  assert f"--config.reward.workdir={wd}/reward_model" in cmd("rlhf") and "--config.reward.stop_workdir= " in cmd("rlhf")
  assert stages["grpo"].needs == ("sft_arith",)
  assert "configs/refusal.py:tiny" in cmd("refusal") and f"--config.refusal.probe={wd}/sft_chat" in cmd("refusal")
  assert "--config.refusal.style=in_place" in cmd("refusal") and "--config.refusal.max_correct=2" in cmd("refusal")
  assert f"--config.init_from.workdir={wd}/base" in cmd("refusal") and stages["refusal"].needs == (
      "data", "base", "sft_chat")

  # A second reward model: two rankings files, two reward models, the stopping rule's judge.
  stages = {s.name: s for s in pipeline.plan(_config(**{"rlhf.second_rm": True}), wd)}
  assert [_flag(c, "out") for c in stages["rankings"].commands] == [
      f"{wd}/rankings/seed0.jsonl", f"{wd}/rankings/seed1.jsonl"]
  rm_b = stages["reward_model"].commands[1]
  assert _flag(rm_b, "workdir") == f"{wd}/reward_model_b" and _flag(rm_b, "config.seed") == "1"
  assert sum(a.startswith("--config.seed=") for a in rm_b) == 1
  assert f"--config.reward.stop_workdir={wd}/reward_model_b" in stages["rlhf"].commands[0]

  # Overrides reach the stage's commands, after its own flags; a non-flag is a one-line error.
  shrunk = _config(**{"grpo.overrides": "--config.eval.examples=8 --config.rl.group=4"})
  stages = {s.name: s for s in pipeline.plan(shrunk, wd)}
  assert stages["grpo"].commands[0][-2:] == ("--config.eval.examples=8", "--config.rl.group=4")
  with pytest.raises(UserError, match=r"config.grpo.overrides: 'eval.examples=8' is not a flag"):
    pipeline.plan(_config(**{"grpo.overrides": "eval.examples=8"}), wd)


def test_a_finished_pipeline_is_skipped_on_rerun(tmp_path):
  runner, cards = FakeRunner(), []
  ran, out = _run(tmp_path, runner, card=lambda wd, stages: cards.append(wd))
  assert ran == list(pipeline.STAGES)
  assert len(runner.calls) == 3 + 9
  assert "[1/10] data: prepare_data, train_tokenizer, tokenize_data" in out and "[10/10] rlhf: done in" in out
  assert len(cards) == 10  # the card after every stage
  done = json.loads((tmp_path / "sft" / "pipeline_done.json").read_text())
  assert done["exit_code"] == 0 and done["seconds"] >= 0 and "experiments.sft" in done["commands"][0]
  assert "10/10" in (tmp_path / "sft.log").read_text()

  runner2 = FakeRunner()
  t0 = time.perf_counter()
  ran, out = _run(tmp_path, runner2, card=lambda wd, stages: cards.append(wd))
  assert ran == [] and runner2.calls == [] and time.perf_counter() - t0 < 5
  assert out.count("finished earlier") == 10 and len(cards) == 11  # a no-op re-run still refreshes the card
  # A finished stage whose config changed is still skipped, with a note saying how to re-run it.
  _, out = _run(tmp_path, FakeRunner(), **{"grpo.steps": 99})
  assert "[5/10] grpo: finished earlier" in out and "recorded commands differ" in out


def test_a_subset_runs_only_its_stages(tmp_path):
  _run(tmp_path, FakeRunner())
  os.remove(tmp_path / "grpo" / "pipeline_done.json")
  os.remove(tmp_path / "rlhf" / "pipeline_done.json")
  runner = FakeRunner()
  ran, out = _run(tmp_path, runner, stages="grpo,rlhf")
  assert ran == ["grpo", "rlhf"] and [m for m, _ in runner.calls] == ["experiments.grpo", "experiments.grpo"]
  assert "[1/2] grpo" in out and "[2/2] rlhf" in out


def test_a_subset_whose_prerequisite_has_not_finished_is_one_line(tmp_path):
  runner = FakeRunner()
  with pytest.raises(UserError) as e:
    _run(tmp_path, runner, stages="grpo,rlhf")
  assert str(e.value) == (f"config.stages: stage 'grpo' needs stage 'sft_arith', which has not finished in "
                          f"{tmp_path} (no {tmp_path}/sft_arith/pipeline_done.json); add sft_arith to config.stages")
  assert runner.calls == []
  with pytest.raises(UserError, match=r"config.stages: unknown stage 'sft_tools'; the stages are data, base"):
    _run(tmp_path, runner, stages="data,sft_tools")
  # A prerequisite in the same selection is fine: it runs first.
  ran, _ = _run(tmp_path, runner, stages="data,base")
  assert ran == ["data", "base"]


def test_a_failing_stage_stops_the_pipeline_naming_its_log_and_exit_code(tmp_path):
  cards = []
  with pytest.raises(UserError) as e:
    _run(tmp_path, FakeRunner(fail={"experiments.sft": 2}), card=lambda wd, stages: cards.append(wd))
  log = tmp_path / "sft.log"
  assert str(e.value) == (f"stage 'sft' exited with code 2: see {log} "
                          "(last line: error: config.data.path: no such file 'x')")
  assert (tmp_path / "base" / "pipeline_done.json").exists() and not (tmp_path / "sft" / "pipeline_done.json").exists()
  assert not (tmp_path / "sft_arith").exists()  # nothing after the failure ran
  assert len(cards) == 3  # after data, after base, and after the failure
  snapshot = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p != log}

  # Fixed, the same command goes on from the failed stage; what was done is left as it was.
  runner = FakeRunner()
  ran, _ = _run(tmp_path, runner)
  assert ran[0] == "sft" and runner.calls[0][0] == "experiments.sft"
  assert all(p.stat().st_mtime_ns == t for p, t in snapshot.items())

  with pytest.raises(UserError, match=r"stage 'data' was killed by SIGKILL: see .*data.log"):
    _run(tmp_path / "k", FakeRunner(fail={"experiments.prepare_data": -9}))


def test_a_stage_that_exits_0_before_its_last_step_is_not_marked_done(tmp_path):
  """A training run stopped by SIGTERM exits 0 with an earlier checkpoint: not finished."""
  with pytest.raises(UserError) as e:
    _run(tmp_path, FakeRunner(short={"experiments.pretrain"}), stages="data,base")
  assert str(e.value).startswith(f"stage 'base' exited 0 but did not finish: {tmp_path}/base stopped at step "
                                 "180 of 360 (interrupted?)")
  assert not (tmp_path / "base" / "pipeline_done.json").exists()


def test_the_runner_tees_output_and_returns_the_exit_code(tmp_path):
  echo = io.BytesIO()
  run = pipeline.subprocess_runner(env=env(), echo=echo)
  code = "import sys; print('hello', flush=True); sys.stderr.write('bar 1/2\\rbar 2/2\\n'); sys.exit(3)"
  rc = run([sys.executable, "-c", code], str(tmp_path / "x.log"))
  assert rc == 3
  log = (tmp_path / "x.log").read_bytes()
  assert log.startswith(f"$ {sys.executable} -c ".encode()) and b"hello\n" in log
  assert b"bar 1/2\rbar 2/2\n" in log and echo.getvalue() in log
  assert pipeline.last_line(str(tmp_path / "x.log")) == "bar 2/2"


def test_sigterm_to_the_pipeline_reaches_the_stage_once(tmp_path):
  """The stage runs in its own session; the pipeline passes SIGTERM on and reports the interruption."""
  run = pipeline.subprocess_runner(env=env(), echo=io.BytesIO())
  code = ("import signal, sys, time\n"
          "signal.signal(signal.SIGTERM, lambda *a: (print('stage got', 'SIGTERM', flush=True), sys.exit(0)))\n"
          "print('ready', flush=True)\ntime.sleep(30)\n")
  before = signal.getsignal(signal.SIGTERM)
  timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
  timer.start()
  t0 = time.perf_counter()
  with pytest.raises(pipeline.Interrupted) as e:
    run([sys.executable, "-c", code], str(tmp_path / "s.log"))
  timer.join()
  assert e.value.signum == signal.SIGTERM and e.value.returncode == 0 and time.perf_counter() - t0 < 20
  assert (tmp_path / "s.log").read_text().count("stage got SIGTERM") == 1
  assert signal.getsignal(signal.SIGTERM) == before  # the forwarding handler is gone again


def test_the_command_line_reports_a_failed_stage_in_one_line(tmp_path):
  """A real stage command that fails (an unknown key passed down): exit 2, one line naming the stage,
  its log (which has the stage's own error) and the exit code; no marker written."""
  wd = tmp_path / "pipe"
  r = subprocess.run([sys.executable, "-m", "experiments.pipeline", "--config=configs/pipeline.py:tiny",
                      f"--workdir={wd}", "--config.stages=data", "--config.data.overrides=--config.web.nope=1"],
                     cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stdout + r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: stage 'data' exited with code 2: see {wd}/data.log (last line: error: unknown config key "
      "'config.web.nope' (every key must be declared in the config file))")
  assert "[1/1] data: prepare_data, train_tokenizer, tokenize_data" in r.stdout
  assert not (wd / "data" / "pipeline_done.json").exists() and (wd / "report.md").exists()


# --- the report card ------------------------------------------------------------------------------

def _write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _fixture(tmp_path):
  """Small versions of what the stages write (keys as the experiments log them)."""
  wd = tmp_path
  (wd / "data" / "tokenizer").mkdir(parents=True)
  (wd / "data" / "shards").mkdir(parents=True)
  (wd / "data" / "web_stats.json").write_text(json.dumps({"steps": [
      {"step": "read", "in": 500, "kept": 500, "dropped": 0, "reasons": {}},
      {"step": "url", "in": 500, "kept": 490, "dropped": 10, "reasons": {"domain": 10}},
      {"step": "minhash", "in": 490, "kept": 430, "dropped": 60, "reasons": {}}],
      "labels": {"near_duplicates_removed": 1.0, "pii_in_kept_text": 0}}))
  (wd / "data" / "tokenizer" / "tokenizer_report.json").write_text(json.dumps(
      {"vocab_size": 2048, "heldout_bytes_per_token": 3.06, "bytes_per_token": {"tinyshakespeare.txt": 2.17}}))
  (wd / "data" / "shards" / "tokenize_report.json").write_text(json.dumps(
      {"train": {"num_tokens": 132095, "num_docs": 430}, "val": {"num_tokens": 6667, "num_docs": 27}}))
  _write_jsonl(wd / "base" / "metrics.jsonl", [
      {"step": 0, "val/loss": 7.66}, {"step": 25, "train/loss": 5.0, "perf/tokens_per_sec": 7000.0, "perf/mfu": 0.6},
      {"step": 50, "train/loss": 3.0, "perf/tokens_per_sec": 8000.0, "perf/mfu": 0.7},
      {"step": 50, "val/loss": 2.66, "val/bits_per_byte": 1.22}])
  (wd / "base" / "report.md").write_text(
      "# P\n\n## Samples at the last evaluation\n\n**'The '** →\n\n```\nThe city of Rudford\n```\n")
  _write_jsonl(wd / "sft_chat" / "metrics.jsonl", [
      {"step": 0, "val/loss": 10.0, "eval/format": 0.0, "eval/world/seen_8+/accuracy": 0.43,
       "eval/arithmetic/accuracy": 0.0},
      {"step": 150, "val/loss": 0.69, "eval/format": 0.99, "eval/world/seen_8+/accuracy": 0.58,
       "eval/arithmetic/accuracy": 0.02}])
  _write_jsonl(wd / "sft" / "metrics.jsonl", [
      {"step": 0, "eval/format": 0.0, "eval/tool_calls": 0.0, "eval/arithmetic/accuracy": 0.0},
      {"step": 150, "eval/format": 0.94, "eval/tool_calls": 0.96, "eval/arithmetic/accuracy": 0.31}])
  _write_jsonl(wd / "sft" / "eval.jsonl", [
      {"task": "arithmetic", "reply": "Answer: 56", "reference": "56", "score": 1.0,
       "calls": [{"name": "python", "arguments": "7*8"}], "outputs": ["56"]}])
  _write_jsonl(wd / "grpo" / "metrics.jsonl", [
      {"step": 0, "eval/pass@1": 0.43, "eval/pass@4": 0.63, "eval/greedy_arithmetic/accuracy": 0.59,
       "eval/length_correct": 106.0, "eval/length_wrong": 116.0},
      {"step": 1, "rollout/reward": 0.5, "rollout/response_tokens": 110.0},
      {"step": 40, "eval/pass@1": 0.48, "eval/pass@4": 0.70, "eval/kl": 0.004}])
  _write_jsonl(wd / "reward_model" / "metrics.jsonl", [
      {"step": 0, "val/accuracy": 0.53, "val/loss": 0.71, "val/top1": 0.39},
      {"step": 100, "val/accuracy": 0.68, "val/loss": 0.54, "val/top1": 0.54}])
  _write_jsonl(wd / "rankings" / "seed0.jsonl", [{"gold": [1.0, 0.75, 0.75]}, {"gold": [0.5, 0.0]}])
  _write_jsonl(wd / "rlhf" / "metrics.jsonl", [
      {"step": 0, "eval/kl_reply": 0.0, "eval/proxy": 0.94, "eval/gold": 0.81, "eval/pass@1": 0.21},
      {"step": 8, "eval/kl_reply": 0.32, "eval/proxy": 1.32, "eval/gold": 0.86, "eval/pass@1": 0.22}])
  with open(wd / "rlhf" / "metrics.jsonl", "a") as f:
    f.write('{"step": 9, "eval/pro')  # a torn last line, as a killed run leaves
  _write_jsonl(wd / "rlhf" / "eval_samples.jsonl", [
      {"step": 0, "prompt": "Where does Hugo work?", "reply": "She works for X.", "proxy": 2.0, "gold": 0.75},
      {"step": 8, "prompt": "Where does Hugo work?", "reply": "He works for X.", "proxy": 2.9, "gold": 0.75}])
  (wd / "rlhf" / "best_of_n.json").write_text(json.dumps(
      {"n": [1, 2], "kl": [0.0, 0.19], "proxy": [1.07, 1.67], "gold": [0.85, 0.95]}))
  (wd / "refusal" / "refusal").mkdir(parents=True)
  (wd / "refusal" / "refusal" / "before.json").write_text(json.dumps(
      {"probe": "sft_chat", "eval/world/accuracy": 0.25, "eval/world/seen_never/accuracy": 0.0,
       "eval/world/seen_never/refused": 0.0, "eval/world/seen_never/hallucinated": 0.96,
       "eval/world/seen_8+/accuracy": 0.58, "eval/world/seen_8+/refused": 0.0}))
  _write_jsonl(wd / "refusal" / "refusal" / "probe.jsonl", [
      {"unknown": True, "samples": 8}, {"unknown": False, "samples": 8}, {"unknown": True, "samples": 8}])
  _write_jsonl(wd / "refusal" / "metrics.jsonl", [
      {"step": 0, "eval/world/accuracy": 0.01},  # the base model: not the "before" (the probed model is)
      {"step": 150, "eval/world/accuracy": 0.24, "eval/world/seen_never/accuracy": 0.0,
       "eval/world/seen_never/refused": 0.6, "eval/world/seen_never/hallucinated": 0.4,
       "eval/world/seen_8+/accuracy": 0.55, "eval/world/seen_8+/refused": 0.05}])
  for name, seconds in (("data", 30.0), ("base", 600.0)):
    (wd / name / "pipeline_done.json").write_text(json.dumps({"seconds": seconds}))


def test_report_card_from_the_stages_files(tmp_path):
  _fixture(tmp_path)
  stages = pipeline.plan(_config(), str(tmp_path))
  report_card.write(str(tmp_path), stages)
  card = (tmp_path / "report.md").read_text()
  for heading in ("## Stages", "## Did each stage do its job?", "## Data", "## Base model", "## SFT",
                  "## Arithmetic SFT", "## GRPO", "## Refusal recipe", "## Reward model", "## RLHF"):
    assert heading in card, heading
  assert "| data | done | 30 s |" in card and "| base | done | 10.0 min | 7500 | 0.65 |" in card
  assert "| sft_arith | not run | — |" in card and "| refusal | not run | — |" in card
  assert "of 3 training-entity facts 8 times at temperature 1; 2 marked unknown" in card
  assert "| never | 0.000 → 0.000 | 0.000 → 0.600 | 0.960 → 0.400 |" in card
  assert "| 8+ | 0.580 → 0.550 | 0.000 → 0.050 | — → — |" in card
  assert "| minhash | 490 | 430 | 60 |" in card and "3.06 bytes per token" in card
  assert "Held-out loss 7.660 → 2.660 nats/token" in card and "`The city of Rudford`" in card
  assert "| arithmetic | 0.000 | 0.020 | 0.000 | 0.310 |" in card
  assert "python('7*8') → '56'" in card
  assert "| 40 | 0.480 | 0.700 | — |" in card  # greedy not logged at step 40: a dash, not a crash
  assert "Rankings from sft_chat: 2" in card and "3 ordered pairs" in card  # ties make no pair
  assert "| 8 | 0.320 | 1.320 | 0.860 | 0.220 |" in card and "| 2 | 0.190 | 1.670 | 0.950 |" in card
  assert "step 8: 'Where does Hugo work?' → `He works for X.` (proxy +2.90, gold +0.75)" in card
  for png in ("card_losses.png", "card_grpo.png", "card_rlhf.png"):
    assert (tmp_path / png).exists() and png in card

  ok = {(c["stage"], c["measure"].split(":")[0]): c["ok"] for c in report_card.checks(str(tmp_path))}
  assert ok[("base", "held-out loss (nats/token)")] is True
  assert ok[("grpo", "held-out pass@1")] is True and ok[("sft_arith", "held-out arithmetic accuracy (greedy)")] is None
  assert ok[("reward_model", "held-out pairwise accuracy (chance 0.5)")] is True
  assert ok[("rlhf", "proxy reward (the reward model's score)")] is True
  full = {(c["stage"], c["measure"]): c["ok"] for c in report_card.checks(str(tmp_path))}
  assert full[("refusal", "facts never seen: hallucinated (probed sft_chat → after the recipe)")] is True  # 0.96 → 0.40
  assert full[("refusal", "facts seen 8+ times: accuracy")] is True  # 0.58 → 0.55: within 5 points
  assert full[("sft_chat", "world facts seen 8+ times: accuracy")] is True  # 0.43 → 0.58
  assert report_card._kept(0.554, 0.523) is True and report_card._kept(0.58, 0.52) is False


def test_report_card_of_an_empty_workdir_is_all_dashes(tmp_path):
  report_card.write(str(tmp_path), pipeline.plan(_config(), str(tmp_path)))
  card = (tmp_path / "report.md").read_text()
  assert "0 of 10 stages finished" in card and "Held-out loss — → — nats/token" in card
  assert all(c["ok"] is None for c in report_card.checks(str(tmp_path)))
  assert not list(tmp_path.glob("*.png"))
  # A partial run (the base model only): its panel is drawn, the empty ones quietly left out.
  _write_jsonl(tmp_path / "base" / "metrics.jsonl", [{"step": 0, "val/loss": 7.0}, {"step": 5, "train/loss": 6.0}])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    report_card.write(str(tmp_path), pipeline.plan(_config(), str(tmp_path)))
  assert [p.name for p in tmp_path.glob("*.png")] == ["card_losses.png"]


# --- the whole chain, for real -----------------------------------------------------------------------

# The measures that move the intended way at the tiny preset's sizes (the README's first command, as
# written; 2026-12-03 from a fresh clone). Not required: the refusal recipe's bar, which the card
# measures and does not meet at these sizes (never-seen hallucination 0.976 → 0.738).
MOVES = {
    ("data", "documents: read → kept by the web pipeline"), ("data", "held-out bytes per BPE token"),
    ("base", "held-out loss (nats/token)"), ("sft", "SFT with tools: format compliance (base → SFT)"),
    ("sft", "tool calls per held-out reply"), ("sft_chat", "SFT without tools: format compliance (base → SFT)"),
    ("sft_chat", "world facts seen 8+ times: accuracy"),
    ("sft_arith", "held-out arithmetic accuracy (greedy)"),
    ("grpo", "held-out pass@1"), ("reward_model", "held-out pairwise accuracy (chance 0.5)"),
    ("rlhf", "proxy reward (the reward model's score)")}


def assert_card(wd):
  """The card of a finished pipeline: every section, every stage done, each measure as intended."""
  card = (wd / "report.md").read_text()
  for heading in ("## Stages", "## Did each stage do its job?", "## Data", "## Base model", "## SFT",
                  "## Arithmetic SFT", "## GRPO", "## Refusal recipe", "## Reward model", "## RLHF"):
    assert heading in card, heading
  assert "10 of 10 stages finished" in card
  for png in ("card_losses.png", "card_grpo.png", "card_rlhf.png"):
    assert (wd / png).exists() and png in card
  rows = {(c["stage"], c["measure"]): c for c in report_card.checks(str(wd))}
  assert MOVES <= set(rows)
  assert [k for k in MOVES if rows[k]["ok"] is not True] == []
  assert all(c["start"] is not None and c["end"] is not None for k, c in rows.items() if k[0] != "sft")


@pytest.mark.slow
def test_the_tiny_pipeline_end_to_end(tmp_path):
  """The README's first command as written (its time there), then again: every stage skipped in well
  under a minute."""
  wd = tmp_path / "pipe"
  cmd = [sys.executable, "-m", "experiments.pipeline", "--config=configs/pipeline.py:tiny", f"--workdir={wd}"]
  r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=3600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert all((wd / s / "pipeline_done.json").exists() for s in pipeline.STAGES)
  assert_card(wd)

  t0 = time.perf_counter()
  r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and r.stdout.count("finished earlier") == len(pipeline.STAGES), r.stdout + r.stderr
  assert time.perf_counter() - t0 < 60
