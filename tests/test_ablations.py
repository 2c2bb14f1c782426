"""Ablations, one command each: the runs each arm × seed makes, the source check, skipping finished
runs, and the table (mean ± std over seeds, per-seed values) read from the runs' own files."""
import io
import json
import os
import subprocess
import sys

import pytest

from configs import ablations as ablations_config
from lm import ablations, pipeline
from lm.errors import UserError
from tests.conftest import ROOT, env
from tests.test_pipeline import FakeRunner, _flag, _write_jsonl, set_keys


def _config(name, **updates):
  return set_keys(ablations_config.get_config(name), updates)


def _fake_source(root, stages=("base", "sft", "sft_arith", "sft_chat")):
  for s in stages:
    os.makedirs(os.path.join(root, s, "checkpoints", "10"), exist_ok=True)
  return str(root)


def test_every_ablation_plans_its_arms_and_seeds(tmp_path):
  assert set(ablations_config.ARGS) == set(ablations.ABLATIONS)
  src, wd = str(tmp_path / "pipe"), str(tmp_path / "abl")
  for name, ab in ablations.ABLATIONS.items():
    stages = ablations.plan(_config(name, source=src, seeds="0,1"), wd)
    names = [s.name for s in stages]
    assert len(names) == len(set(names))
    for arm in ab.arms:
      for seed in (0, 1):
        assert any(n.startswith(f"{arm}/seed={seed}/") for n in names), (name, arm, seed)
    for s in stages:  # every run: its own workdir under the ablation's, the seed, the README's module
      cmd = s.commands[0]
      assert cmd[0].startswith("experiments.") and _flag(cmd, "workdir") == os.path.join(wd, s.name)
      assert _flag(cmd, "config.seed") == s.name.split("seed=")[1].split("/")[0]

  cmd = lambda stages, name: " ".join(next(s for s in stages if s.name == name).commands[0])  # noqa: E731
  s = ablations.plan(_config("grpo_vs_drgrpo", source=src), wd)
  assert "--config.rl.aggregation=sequence_mean --config.rl.scale_by_std=True" in cmd(s, "grpo/seed=0/grpo")
  assert "--config.rl.aggregation=constant --config.rl.scale_by_std=False" in cmd(s, "dr_grpo/seed=2/grpo")
  assert f"--config.init_from.workdir={src}/sft_arith" in cmd(s, "dr_grpo/seed=2/grpo")
  s = ablations.plan(_config("tokens_to_think", source=src, **{"grpo.overrides": "--config.eval.examples=8"}), wd)
  grpo = next(x for x in s if x.name == "answer_only/seed=1/grpo")
  assert grpo.needs == ("answer_only/seed=1/sft_arith",)
  assert "--config.tasks.arithmetic.worked=False" in cmd(s, "answer_only/seed=1/sft_arith")
  assert f"--config.init_from.workdir={wd}/answer_only/seed=1/sft_arith" in cmd(s, "answer_only/seed=1/grpo")
  assert cmd(s, "worked/seed=0/grpo").endswith("--config.tasks.arithmetic.worked=True --config.train.steps=100 "
                                               "--config.seed=0 --config.eval.examples=8")
  s = ablations.plan(_config("tools", source=src), wd)
  calc = next(x for x in s if x.name == "calculator/seed=2/grpo")
  assert calc.needs == ("calculator/seed=2/sft_arith",)
  assert f"--config.init_from.workdir={wd}/calculator/seed=2/sft_arith" in cmd(s, "calculator/seed=2/grpo")
  assert "tools.use=python" in cmd(s, "calculator/seed=2/grpo")
  sft = cmd(s, "calculator/seed=2/sft_arith")
  assert "configs/sft.py:arith" in sft and f"{src}/base" in sft and "tools.use=python" in sft and "seed=2" in sft
  assert f"{src}/sft_arith" in cmd(s, "no_tool/seed=0/grpo") and "tools.use" not in cmd(s, "no_tool/seed=0/grpo")
  assert [x.name for x in s if x.name.startswith("no_tool")] == [f"no_tool/seed={i}/grpo" for i in range(3)]
  s = ablations.plan(_config("refusal", source=str(tmp_path / "p{seed}")), wd)
  assert f"--config.refusal.probe={tmp_path}/p1/sft_chat" in cmd(s, "made_up/seed=1/refusal")
  assert "--config.refusal.made_up=24" in cmd(s, "made_up/seed=1/refusal")
  assert "--config.refusal.made_up=0" in cmd(s, "recipe/seed=1/refusal")
  assert "style" not in cmd(s, "recipe/seed=1/refusal")
  assert "--config.refusal.style=in_place --config.refusal.max_correct=2" in cmd(s, "in_place/seed=1/refusal")


def test_bad_settings_are_one_line(tmp_path):
  with pytest.raises(UserError, match=r"config.seeds: '0,x' is not a comma-separated list"):
    ablations.plan(_config("sft_vs_rl", seeds="0,x"), str(tmp_path))
  with pytest.raises(UserError, match=r"config.source: .*/nope/sft_arith has no checkpoint; run the pipeline"):
    ablations.check_source(_config("sft_vs_rl", source=str(tmp_path / "nope")))
  _fake_source(tmp_path / "p0", ("base", "sft_chat"))
  with pytest.raises(UserError, match=r"p1/base has no checkpoint"):  # {seed}: every seed's pipeline is checked
    ablations.check_source(_config("refusal", source=str(tmp_path / "p{seed}"), seeds="0,1"))
  with pytest.raises(UserError, match=r"config.grpo.overrides: 'x' is not a flag"):
    ablations.plan(_config("sft_vs_rl", **{"grpo.overrides": "x"}), str(tmp_path))
  with pytest.raises(ValueError, match="unknown arg 'nope'"):
    ablations_config.get_config("nope")


def test_runs_then_skips_and_writes_the_table(tmp_path):
  config = _config("grpo_vs_drgrpo", source=_fake_source(tmp_path / "pipe"), seeds="0,1")
  wd = str(tmp_path / "abl")
  stages = ablations.plan(config, wd)
  runner, log = FakeRunner(), io.StringIO()
  ran = pipeline.run_stages(stages, stages, wd, runner, log=log, card=lambda w, _: ablations.write_report(config, w))
  assert ran == ["grpo/seed=0/grpo", "grpo/seed=1/grpo", "dr_grpo/seed=0/grpo", "dr_grpo/seed=1/grpo"]
  assert os.path.exists(os.path.join(wd, "dr_grpo", "seed=1", "grpo.log"))
  # What the runs logged: pass@1 and the length of wrong replies at steps 0 and 40.
  for arm, seed, (p0, p1), (w0, w1) in (("grpo", 0, (0.4, 0.5), (100, 130)), ("grpo", 1, (0.4, 0.6), (100, 150)),
                                         ("dr_grpo", 0, (0.4, 0.55), (100, 101)), ("dr_grpo", 1, (0.4, 0.45), (100, 99))):
    _write_jsonl(tmp_path / "abl" / arm / f"seed={seed}" / "grpo" / "metrics.jsonl", [
        {"step": 0, "eval/pass@1": p0, "eval/length_wrong": w0}, {"step": 3, "rollout/reward": 0.5},
        {"step": 40, "eval/pass@1": p1, "eval/length_wrong": w1}])
  runner2 = FakeRunner()
  assert pipeline.run_stages(stages, stages, wd, runner2, log=io.StringIO(),
                             card=lambda w, _: ablations.write_report(config, w)) == []
  assert runner2.calls == []  # everything finished: only the table is regenerated
  report = open(os.path.join(wd, "report.md")).read()
  assert "| measure | grpo | dr_grpo |" in report and "4 of 4 runs' stages finished" in report
  assert "| held-out pass@1, end (SFT then GRPO) | 0.550 ± 0.050 (0.500, 0.600) | 0.500 ± 0.050 (0.550, 0.450) |" in report
  assert "| length of wrong replies, end | 140.000 ± 10.000 (130.000, 150.000) | 100.000 ± 1.000 (101.000, 99.000) |" in report
  assert "| greedy accuracy, start | — | — |" in report  # not logged: a dash
  assert "![curves](ablation.png)" in report and os.path.exists(os.path.join(wd, "ablation.png"))
  table = json.load(open(os.path.join(wd, "ablation.json")))["table"]
  assert table["length of wrong replies, start (tokens)"]["dr_grpo"] == [100, 100]


def test_refusal_measures_read_before_and_after(tmp_path):
  config = _config("refusal", seeds="0")
  d = tmp_path / "recipe" / "seed=0" / "refusal"
  (d / "refusal").mkdir(parents=True)
  (d / "refusal" / "before.json").write_text(json.dumps({"eval/world/seen_never/hallucinated": 0.96}))
  _write_jsonl(d / "metrics.jsonl", [{"step": 0, "eval/world/seen_never/hallucinated": 1.0},
                                     {"step": 150, "eval/world/seen_never/hallucinated": 0.5}])
  values = ablations.table(config, str(tmp_path))
  assert values["never-seen facts: hallucinated, before (the probed model)"]["recipe"] == [0.96]
  assert values["never-seen facts: hallucinated, after the recipe"]["recipe"] == [0.5]
  assert values["never-seen facts: hallucinated, after the recipe"]["made_up"] == [None]


def test_a_cluster_launcher_prints_the_commands_and_writes_nothing(tmp_path, capsys):
  from experiments import ablate
  wd = tmp_path / "abl"
  ablate.main(_config("sft_vs_rl", launcher="print", source="/nowhere"), str(wd))
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 3 and all(l.startswith("python -m experiments.grpo --config=configs/grpo.py:tiny") for l in lines)
  ablate.main(_config("tokens_to_think", launcher="slurm", source="/nowhere", seeds="0"), str(wd))
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("sbatch --job-name=tokens_to_think-answer_only-seed=0-sft_arith")
  assert "launch/slurm.sbatch experiments.sft --config=configs/sft.py:arith" in lines[0]
  assert lines[1] == "# after answer_only/seed=0/sft_arith has finished:" and "experiments.grpo" in lines[2]
  assert not wd.exists()
  with pytest.raises(UserError, match="config.launcher: 'pbs' is not one of local, print"):
    ablate.main(_config("sft_vs_rl", launcher="pbs"), str(wd))


def test_the_command_line_error_is_one_line(tmp_path):
  r = subprocess.run([sys.executable, "-m", "experiments.ablate", "--config=configs/ablations.py:sft_vs_rl",
                      f"--workdir={tmp_path}/abl", f"--config.source={tmp_path}/nope"],
                     cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      f"error: config.source: {tmp_path}/nope/sft_arith has no checkpoint; run the pipeline there first "
      f"(python -m experiments.pipeline --config=configs/pipeline.py:tiny --workdir={tmp_path}/nope) or point "
      "config.source at one that has"], r.stderr
