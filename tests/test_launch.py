"""Launch scripts and sweeps: syntax, dry runs, sweep expansion and summaries. No JAX, no cloud."""
import argparse
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import types

import pytest

from launch import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")) + glob.glob(os.path.join(ROOT, "launch", "*.sbatch")))
EXP = ["experiments.pretrain", "--config=configs/pretrain.py:tiny", "--workdir=gs://bucket/runs/tiny"]
JAX_PIN = next(l.split("==")[1].strip() for l in open(os.path.join(ROOT, "requirements.txt")) if l.startswith("jax=="))


def _bash(script, args, env, tmp_path):
  """Runs a launch script with a PATH whose gcloud/xpk only leave a trace, so nothing reaches a cloud."""
  fake = tmp_path / "bin"
  fake.mkdir(exist_ok=True)
  for tool in ("gcloud", "xpk", "sbatch"):
    (fake / tool).write_text(f"#!/usr/bin/env bash\necho \"$@\" >> {tmp_path}/{tool}.called\n")
    (fake / tool).chmod(0o755)
  full_env = {"PATH": f"{fake}:{os.environ['PATH']}", "HOME": str(tmp_path), "TMPDIR": str(tmp_path), **env}
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], env=full_env,
                        capture_output=True, text=True, timeout=30)


def _command_arg(line):
  words = shlex.split(line)
  return words[words.index("--command") + 1]


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_shell_scripts_parse(path):
  r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr


def test_every_launcher_is_there():
  names = {os.path.basename(p) for p in SCRIPTS}
  assert {"local.sh", "tpu_vm.sh", "gke_xpk.sh", "slurm.sbatch"} <= names


def test_tpu_vm_dry_run_copies_tree_and_starts_on_all_workers(tmp_path):
  r = _bash("tpu_vm.sh", EXP + ["--config.opt.lr=0.001"],
            {"DRY_RUN": "1", "TPU_NAME": "my-tpu", "ZONE": "us-central2-b", "PROJECT": "proj"}, tmp_path)
  assert r.returncode == 0, r.stderr
  assert not list(tmp_path.glob("*.called")), "DRY_RUN=1 must not call gcloud"
  lines = r.stdout.strip().splitlines()
  assert "tar czf" in lines[0] and "scp" in lines[1] and "--worker=all" in lines[1]
  ssh = lines[-1]
  assert ssh.startswith("gcloud compute tpus tpu-vm ssh my-tpu")
  assert "--zone=us-central2-b" in ssh and "--project=proj" in ssh and "--worker=all" in ssh
  remote = _command_arg(ssh)
  for part in (*EXP, "--config.opt.lr=0.001", "LM_DISTRIBUTED=auto", f"jax[tpu]=={JAX_PIN}", "-r requirements.txt"):
    assert part in remote, part
  assert subprocess.run(["bash", "-n", "-c", remote]).returncode == 0


def test_tpu_vm_git_ref_clones_instead_of_copying(tmp_path):
  r = _bash("tpu_vm.sh", EXP, {"DRY_RUN": "1", "TPU_NAME": "t", "ZONE": "z", "GIT_REF": "v1.2",
                               "REPO_URL": "https://example.com/lm.git"}, tmp_path)
  assert r.returncode == 0, r.stderr
  assert len(r.stdout.strip().splitlines()) == 1  # no tarball, no scp
  remote = _command_arg(r.stdout)
  assert "git clone -q https://example.com/lm.git lm" in remote and "git fetch -q origin v1.2" in remote


def test_tpu_vm_needs_name_and_warns_on_local_workdir(tmp_path):
  r = _bash("tpu_vm.sh", EXP, {"DRY_RUN": "1", "ZONE": "z"}, tmp_path)
  assert r.returncode != 0 and "TPU_NAME" in r.stderr
  r = _bash("tpu_vm.sh", EXP[:2] + ["--workdir=runs/x"], {"DRY_RUN": "1", "TPU_NAME": "t", "ZONE": "z"}, tmp_path)
  assert r.returncode == 0 and "not a gs:// path" in r.stderr


def test_gke_xpk_dry_run(tmp_path):
  r = _bash("gke_xpk.sh", EXP, {"DRY_RUN": "1", "CLUSTER": "c1", "TPU_TYPE": "v5p-32", "NUM_SLICES": "2",
                                "WORKLOAD": "My_Sweep.lr-0"}, tmp_path)
  assert r.returncode == 0, r.stderr
  assert not list(tmp_path.glob("*.called"))
  stage, create = r.stdout.strip().splitlines()
  assert "git ls-files" in stage
  words = shlex.split(create)
  assert words[:3] == ["xpk", "workload", "create"]
  for flag in ("--cluster=c1", "--tpu-type=v5p-32", "--num-slices=2", "--workload=my-sweep-lr-0",
               "--base-docker-image=python:3.11-slim"):
    assert flag in words, flag
  command = _command_arg(create)
  for part in (*EXP, "LM_DISTRIBUTED=auto", f"jax[tpu]=={JAX_PIN}"):
    assert part in command, part
  assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0


def test_gke_xpk_prebuilt_image_skips_install(tmp_path):
  r = _bash("gke_xpk.sh", EXP, {"DRY_RUN": "1", "CLUSTER": "c1", "TPU_TYPE": "v5p-32",
                                "DOCKER_IMAGE": "gcr.io/p/lm:1"}, tmp_path)
  assert r.returncode == 0, r.stderr
  words = shlex.split(r.stdout.strip())
  assert "--docker-image=gcr.io/p/lm:1" in words and "--script-dir" not in r.stdout
  assert "pip install" not in _command_arg(r.stdout)


def test_slurm_sets_jax_distributed_env(tmp_path):
  """Fake scontrol/srun: the script must hand each task the coordinator, count and its own id."""
  fake = tmp_path / "bin"
  fake.mkdir()
  (fake / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'gpu-a07\\ngpu-a08\\n'\n")
  (fake / "srun").write_text("#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do shift; done\n"
                             "for id in 0 1; do SLURM_PROCID=$id \"$@\"; done\n")
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").write_text("#!/usr/bin/env bash\n"
                                       "echo \"$JAX_COORDINATOR_ADDRESS $JAX_NUM_PROCESSES $JAX_PROCESS_ID $*\"\n")
  for f in (fake / "scontrol", fake / "srun", venv / "bin" / "python"):
    f.chmod(0o755)
  digest = subprocess.run(f"sha1sum {ROOT}/requirements.txt | cut -c1-12", shell=True,
                          capture_output=True, text=True).stdout.strip()
  (venv / f".installed-cuda-{digest}").touch()
  env = {"PATH": f"{fake}:{os.environ['PATH']}", "LM_VENV": str(venv), "SLURM_SUBMIT_DIR": ROOT,
         "SLURM_JOB_NODELIST": "gpu-a[07-08]", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "4321"}
  r = subprocess.run(["bash", os.path.join(ROOT, "launch", "slurm.sbatch"), *EXP], env=env,
                     capture_output=True, text=True, timeout=30)
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines() == [f"gpu-a07:24321 2 {i} -m {' '.join(EXP)}" for i in (0, 1)]


def _args(**kw):
  base = dict(config="configs/pretrain.py:tiny", sweep="sweep_lr", workdir=os.path.join(ROOT, "runs", "lr_sweep"),
              experiment=None)
  return argparse.Namespace(**{**base, **kw})


def test_sweep_lr_expands_to_three_points():
  exp, points, argv, workdirs = sweep.plan(_args(), ["--config.train.steps=50"])
  assert exp == "experiments.pretrain"
  assert [p["opt.lr"] for p in points] == [1e-3, 3e-3, 1e-2]
  assert workdirs == ["runs/lr_sweep/opt.lr=0.001", "runs/lr_sweep/opt.lr=0.003", "runs/lr_sweep/opt.lr=0.01"]
  for a, lr, wd in zip(argv, ("0.001", "0.003", "0.01"), workdirs):
    assert a == ["--config=configs/pretrain.py:tiny", f"--workdir={wd}", f"--config.opt.lr={lr}",
                 "--config.train.steps=50"]
    assert float(a[2].split("=")[1]) in (1e-3, 3e-3, 1e-2)


def test_sweep_print_launcher_prints_one_line_per_point(capsys):
  assert sweep.main(["--config=configs/pretrain.py:tiny", "--sweep=sweep_lr", "--workdir=gs://b/sw",
                     "--launcher=print"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 3
  assert lines[1] == ("python -m experiments.pretrain --config=configs/pretrain.py:tiny "
                      "--workdir=gs://b/sw/opt.lr=0.003 --config.opt.lr=0.003")


def test_sweep_slurm_dry_run(capsys):
  assert sweep.main(["--config=configs/pretrain.py:tiny", "--sweep=sweep_lr", "--workdir=/shared/sw",
                     "--launcher=slurm", "--dry_run"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert all(shlex.split(l)[0] == "sbatch" and "launch/slurm.sbatch experiments.pretrain" in l for l in lines)


CONFIG = '''
import ml_collections
def get_config(arg="a"):
  c = ml_collections.ConfigDict()
  c.opt = ml_collections.ConfigDict()
  c.opt.lr = 0.1
  c.opt.name = "adamw"
  return c
def sweep_typo():
  return [{"opt.lr": 0.1}, {"opt.lrr": 0.2}]
def sweep_type():
  return [{"opt.name": 3.5}]
def sweep_ok():
  return [{"opt.lr": 0.1}]
def sweep_same():
  return [{"opt.lr": 0.1}, {"opt.lr": 0.1}]
'''


def test_unknown_sweep_key_exits_2_with_one_line(tmp_path):
  cfg = tmp_path / "bad.py"
  cfg.write_text(CONFIG)
  r = subprocess.run([sys.executable, "-m", "launch.sweep", f"--config={cfg}:a", "--sweep=sweep_typo",
                      f"--workdir={tmp_path}/sw", "--experiment=pretrain", "--launcher=print"],
                     cwd=ROOT, capture_output=True, text=True, timeout=30)
  assert r.returncode == 2
  assert r.stdout == ""
  assert len(r.stderr.strip().splitlines()) == 1 and "'opt.lrr'" in r.stderr and "point 1" in r.stderr


@pytest.mark.parametrize("name,message", [("sweep_type", "opt.name=3.5"), ("sweep_same", "share the workdir"),
                                          ("sweep_nope", "no function")])
def test_bad_sweeps_are_user_errors(tmp_path, capsys, name, message):
  cfg = tmp_path / "bad.py"
  cfg.write_text(CONFIG)
  assert sweep.main([f"--config={cfg}", f"--sweep={name}", f"--workdir={tmp_path}", "--experiment=pretrain"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err


def test_experiment_must_exist(tmp_path, capsys):
  cfg = tmp_path / "bad.py"
  cfg.write_text(CONFIG)
  assert sweep.main([f"--config={cfg}", "--sweep=sweep_ok", f"--workdir={tmp_path}"]) == 2
  assert "--experiment" in capsys.readouterr().err


def _fake_metrics(workdir, losses):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step, loss in enumerate(losses):
      f.write(json.dumps({"step": step * 10, "train/loss": loss + 0.1}) + "\n")
      f.write(json.dumps({"step": step * 10, "val/loss": loss}) + "\n")
    f.write('{"step": 99, "val/lo')  # killed mid-write


def test_summary_table_and_plot(tmp_path):
  points = [{"opt.lr": 1e-3}, {"opt.lr": 3e-3}, {"opt.lr": 1e-2}]
  workdirs = [str(tmp_path / sweep.point_name(p)) for p in points]
  _fake_metrics(workdirs[0], [5.0, 3.0, 2.5])
  _fake_metrics(workdirs[1], [5.0, 2.8, 2.25])
  md = sweep.write_summary(str(tmp_path), points, workdirs, returncodes=[0, 0, 1], title="lr")
  text = open(md).read()
  rows = [l for l in text.splitlines() if l.startswith("| ")]
  assert rows == ["| point | opt.lr | step | final val/loss |",
                  "| opt.lr=0.001 | 0.001 | 20 | 2.5000 |",
                  "| opt.lr=0.003 | 0.003 | 20 | 2.2500 |",
                  "| opt.lr=0.01 | 0.01 | — | failed (exit 1) |"]
  assert "Best: `opt.lr=0.003`" in text and "![final val/loss per point](sweep.png)" in text
  png = tmp_path / "sweep.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_summary_bar_plot_for_several_keys_and_no_plot_without_results(tmp_path):
  points = [{"opt.lr": 1e-3, "model.norm": "rmsnorm"}, {"opt.lr": 1e-3, "model.norm": "layernorm"}]
  workdirs = [str(tmp_path / sweep.point_name(p)) for p in points]
  sweep.write_summary(str(tmp_path / "empty"), points, workdirs)
  assert not (tmp_path / "empty" / "sweep.png").exists()
  assert "no val/loss yet" in (tmp_path / "empty" / "sweep.md").read_text()
  for wd, loss in zip(workdirs, (3.0, 3.5)):
    _fake_metrics(wd, [loss])
  sweep.write_summary(str(tmp_path), points, workdirs)
  assert (tmp_path / "sweep.png").stat().st_size > 2000
  assert "| opt.lr=0.001,model.norm=layernorm | 0.001 | layernorm | 0 | 3.5000 |" in (tmp_path / "sweep.md").read_text()


def test_seed_sweep_reports_mean_and_spread(tmp_path):
  points = [{"seed": s} for s in (0, 1, 2)]
  workdirs = [str(tmp_path / sweep.point_name(p)) for p in points]
  for wd, acc in zip(workdirs, (0.5, 0.6, 0.7)):
    _fake_metrics(wd, [2.0])
    with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
      f.write("\n" + json.dumps({"step": 30, "eval/world/accuracy": acc}) + "\n")
  text = open(sweep.write_summary(str(tmp_path), points, workdirs, title="seeds")).read()
  assert "## Across 3 seeds" in text
  assert "| eval/world/accuracy | 0.600 | 0.082 | 3 | 0.500, 0.600, 0.700 |" in text
  assert "| val/loss | 2.000 | 0.000 | 3 |" in text


def test_collect_tables_seed_workdirs_made_elsewhere(tmp_path, capsys):
  """launch/pipeline.sh with SEEDS runs base + SFT per seed itself; --collect tables them."""
  assert sweep.main(["--collect", f"--workdir={tmp_path}"]) == 2
  assert "no seed=<s> workdirs" in capsys.readouterr().err
  for s, acc in ((0, 0.5), (2, 0.7)):
    _fake_metrics(str(tmp_path / f"seed={s}"), [2.0])
    with open(tmp_path / f"seed={s}" / "metrics.jsonl", "a") as f:
      f.write("\n" + json.dumps({"step": 30, "eval/world/accuracy": acc}) + "\n")
  (tmp_path / "seed=x").mkdir()
  assert sweep.main(["--collect", f"--workdir={tmp_path}"]) == 0
  text = (tmp_path / "sweep.md").read_text()
  assert "| eval/world/accuracy | 0.600 | 0.100 | 2 | 0.500, 0.700 |" in text and "seed=x" not in text


def test_collect_tables_start_against_end(tmp_path):
  """Runs that evaluate their starting model at step 0 (GRPO from SFT) get the start/end table:
  ablation (a), SFT alone against SFT then RL, as mean ± std over seeds."""
  for s, (a, b) in enumerate([(0.40, 0.60), (0.44, 0.58)]):
    wd = tmp_path / f"seed={s}"
    wd.mkdir()
    # eval/length_correct is missing at the last evaluation, eval/bon only at step 0, eval/kl non-finite:
    # none of them may show an end value (the last evaluation is the end, not each key's last value).
    rows = [{"step": 0, "eval/pass@1": a, "eval/pass@1_gain": 0.0, "eval/length_correct": 9.0, "eval/bon": 1.0},
            {"step": 3, "train/loss": 1.0}, {"step": 3, "eval/pass@1": 0.5, "eval/length_correct": 8.0},
            {"step": 6, "eval/pass@1": b, "eval/pass@1_gain": b - a, "eval/kl": None, "time/minutes": 2.5 + s}]
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "tr')
  assert sweep.main(["--collect", f"--workdir={tmp_path}"]) == 0
  text = (tmp_path / "sweep.md").read_text()
  assert "| eval/pass@1 | 0.420 ± 0.020 | 0.590 ± 0.010 | 0.170 ± 0.030 | 2 |" in text
  assert "| time/minutes | 3.000 | 0.500 | 2 | 2.500, 3.500 |" in text
  table = text.split("Start (step 0)")[1]
  for absent in ("eval/pass@1_gain |", "eval/length_correct |", "eval/bon |", "eval/kl |"):
    assert absent not in table, absent  # a gain has no start/end pair; the others have no end


def test_sweep_needs_config_and_sweep_without_collect(capsys):
  assert sweep.main(["--workdir=/tmp/x"]) == 2
  assert "--config and --sweep are required" in capsys.readouterr().err


def test_local_sweep_runs_points_in_parallel_and_summarizes(tmp_path, monkeypatch, capsys):
  """The experiment is swapped for a script that writes metrics, so no JAX runs."""
  def fake_commands(launcher, exp, argv, workdirs, name):
    assert launcher == "local" and exp == "experiments.pretrain"
    script = ("import json, os, sys; wd = sys.argv[1]; lr = float(sys.argv[2]); os.makedirs(wd, exist_ok=True);"
              "open(os.path.join(wd, 'metrics.jsonl'), 'w').write(json.dumps({'step': 5, 'val/loss': abs(lr - 0.003) + 2}))")
    return [({}, [sys.executable, "-c", script, a[1].split("=", 1)[1], a[2].split("=")[-1]]) for a in argv]
  monkeypatch.setattr(sweep, "commands", fake_commands)
  out = tmp_path / "sw"
  assert sweep.main(["--config=configs/pretrain.py:tiny", "--sweep=sweep_lr", f"--workdir={out}", "--parallel=2"]) == 0
  text = (out / "sweep.md").read_text()
  assert "| opt.lr=0.003 | 0.003 | 5 | 2.0000 |" in text and "Best: `opt.lr=0.003`" in text
  assert (out / "sweep.png").exists() and (out / "opt.lr=0.01" / "sweep.log").exists()


# --- Dry runs change nothing on this machine --------------------------------------------------------

def _snapshot(*folders):
  """Every file and folder under `folders` with its size and mtime: what a dry run must leave alone."""
  seen = {}
  for top in folders:
    for dirpath, dirnames, filenames in os.walk(top):
      for name in dirnames + filenames:
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        seen[p] = (st.st_size, st.st_mtime_ns)
  return seen


@pytest.fixture
def sandbox(tmp_path):
  """A copy of the launchers, configs and code (no .venv), a HOME and TMPDIR, and a PATH on which every
  tool a launcher could install or submit with (python3, pip, gcloud, xpk, sbatch, srun, scontrol) only
  leaves a trace in <tmp>/calls."""
  repo, home, tmp, fake = (tmp_path / n for n in ("repo", "home", "tmp", "bin"))
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for d in ("launch", "configs", "lm", "experiments"):
    shutil.copytree(os.path.join(ROOT, d), repo / d, ignore=ignore)
  for f in glob.glob(os.path.join(ROOT, "requirements*.txt")):
    shutil.copy(f, repo)
  for d in (home, tmp, fake):
    d.mkdir()
  calls = tmp_path / "calls"
  for tool in ("python3", "pip", "pip3", "gcloud", "xpk", "sbatch", "srun", "scontrol", "docker"):
    (fake / tool).write_text(f"#!/usr/bin/env bash\necho \"{tool} $*\" >> {calls}\n")
    (fake / tool).chmod(0o755)
  env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp), "DRY_RUN": "1",
         "PYTHONDONTWRITEBYTECODE": "1"}
  return types.SimpleNamespace(repo=repo, env=env, calls=calls, folders=(repo, home, tmp))


DRY_RUNS = {  # launcher: (extra environment, arguments)
    "local.sh": ({}, EXP[:2] + ["--workdir=runs/tiny"]),
    "pipeline.sh": ({}, []),
    "slurm.sbatch": ({}, EXP[:2] + ["--workdir=/shared/runs/gpt2"]),
    "tpu_vm.sh": ({"TPU_NAME": "t", "ZONE": "z"}, EXP),
    "gke_xpk.sh": ({"CLUSTER": "c", "TPU_TYPE": "v5p-8"}, EXP),
}


@pytest.mark.parametrize("script", sorted(DRY_RUNS))
def test_dry_run_prints_commands_and_changes_nothing(script, sandbox):
  extra, args = DRY_RUNS[script]
  before = _snapshot(*sandbox.folders)
  r = subprocess.run(["bash", str(sandbox.repo / "launch" / script), *args], cwd=sandbox.repo,
                     env={**sandbox.env, **extra}, capture_output=True, text=True, timeout=30)
  assert r.returncode == 0, r.stderr
  assert _snapshot(*sandbox.folders) == before, f"DRY_RUN=1 {script} changed files"
  assert not sandbox.calls.exists(), f"DRY_RUN=1 {script} ran: {sandbox.calls.read_text()}"
  lines = r.stdout.strip().splitlines()
  assert lines and all(subprocess.run(["bash", "-n", "-c", l]).returncode == 0 for l in lines), r.stdout
  if script in ("local.sh", "slurm.sbatch"):  # a fresh checkout: the venv and pip steps are printed, not run
    assert any(l.startswith("python3 -m venv .venv") for l in lines), r.stdout
    assert any(" -m pip install " in l for l in lines), r.stdout
  if script == "pipeline.sh":
    assert [l.split()[2] for l in lines] == ["experiments.prepare_data", "experiments.train_tokenizer",
                                             "experiments.tokenize_data", "experiments.pretrain", "experiments.sft"]


def test_sweep_dry_runs_change_nothing(sandbox, monkeypatch, capsys):
  """--launcher=print and every cluster launcher's --dry_run, with the sweep's repository root and the
  working directory pointed at the sandbox's copy: nothing appears there, nothing is called."""
  monkeypatch.setattr(sweep, "ROOT", str(sandbox.repo))
  monkeypatch.chdir(sandbox.repo)
  monkeypatch.setenv("PATH", sandbox.env["PATH"])
  before = _snapshot(*sandbox.folders)
  launchers = [["--launcher=print"]] + [[f"--launcher={l}", "--dry_run"] for l in ("slurm", "tpu_vm", "xpk")]
  for extra in launchers:
    assert sweep.main(["--config=configs/pretrain.py:tiny", "--sweep=sweep_lr", "--workdir=runs/lr_sweep", *extra]) == 0
  assert len(capsys.readouterr().out.strip().splitlines()) == 3 * len(launchers)
  assert _snapshot(*sandbox.folders) == before
  assert not sandbox.calls.exists()


def test_pipeline_sh_real_warcs_get_their_own_workdirs_and_no_sft(sandbox):
  """A synthetic run's runs/base has another tokenizer, and SFT asks about the synthetic world's facts."""
  run = lambda **env: subprocess.run(["bash", str(sandbox.repo / "launch" / "pipeline.sh")], cwd=sandbox.repo,
                                     env={**sandbox.env, **env}, capture_output=True, text=True, timeout=30)
  r = run(WARC="../shared/data")
  assert r.returncode == 0, r.stderr
  workdirs = [w.split("=", 1)[1] for w in r.stdout.split() if w.startswith("--workdir=")]
  assert workdirs == ["runs/data_cc"] * 3 + ["runs/base_cc"]
  r = run(WARC="../shared/data", SFT="runs/sft")
  assert r.returncode == 2 and r.stderr.startswith("error: SFT=runs/sft with WARC=") and not r.stdout


def _refusal_scale(tmp_path, fail="", **env):
  """launch/refusal_scale.sh with a stand-in python that logs each `-m module ...`, writes the table a
  --collect writes (refusal_seeds.md beside the runs) and fails where its arguments contain `fail`."""
  calls = tmp_path / "calls"
  stub = tmp_path / "py"
  stub.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
for a in "$@"; do case $a in --collect=*) d=${{a#--collect=}}; d=${{d%%,*}}; d=${{d%/*}}; mkdir -p "$d"
  printf '| never | hallucinated | 1 | 0.5 | -0.5 |\\n' > "$d/refusal_seeds.md";; esac; done
[[ -n "{fail}" && "$*" == *"{fail}"* ]] && {{ echo boom; exit 3; }}
exit 0
""")
  stub.chmod(0o755)
  full_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": str(stub),
              "ROOT": str(tmp_path / "out"), **env}
  r = subprocess.run(["bash", os.path.join(ROOT, "launch", "refusal_scale.sh")], env=full_env,
                     capture_output=True, text=True, timeout=60)
  return r, (calls.read_text().splitlines() if calls.exists() else [])


def test_refusal_scale_runs_each_variant_at_three_seeds(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "pipeline_done.json").write_text("{}")
  r, calls = _refusal_scale(tmp_path, DATA=str(data), ARMS="wide mid", VARIANTS="recipe made48 fold1 fold2")
  assert r.returncode == 0 and "failed" not in r.stderr, r.stderr
  assert "== wide/fold2" in r.stdout and "| never | hallucinated |" in r.stdout
  by_module = {}
  for c in calls:
    by_module.setdefault(c.split()[1], []).append(c)
  assert len(by_module["experiments.pipeline"]) == 2 and len(by_module["experiments.sft"]) == 4
  wide, mid = sorted(by_module["experiments.pipeline"], key=lambda c: "d_model=512" not in c)
  assert "--config.base.steps=1500" in wide and "--config.model.d_model=512" in wide and "--config.opt.lr=1.5e-3" in wide
  assert "--config.base.steps=720" in mid and "d_model" not in mid
  assert sorted(c.split("--config.tasks.world.train_fold=")[1][0] for c in by_module["experiments.sft"]) == list("aabb")
  runs = [c for c in by_module["experiments.refusal"] if "--collect" not in c]
  assert len(runs) == 2 * 4 * 3
  for arm in ("wide", "mid"):
    w = tmp_path / "out" / arm
    for variant in ("recipe", "made48", "fold1", "fold2"):
      mine = [c for c in runs if f"--workdir={w}/{variant}/s" in c]
      assert sorted(c.split("--config.seed=")[1].split()[0] for c in mine) == ["0", "1", "2"]
      for c in mine:  # the pipeline's refusal stage, with the variant's change
        for flag in ("--config.refusal.style=in_place", f"--config.init_from.workdir={w}/base",
                     f"--config.refusal.probe={w}/sft_chat", "--config.refusal.samples=8",
                     "--config.train.batch_size=16", "--config.train.steps=150"):
          assert flag in c, (flag, c)
        assert ("--config.refusal.made_up=48" in c) == (variant == "made48")
        assert f"--config.refusal.max_correct={1 if variant == 'fold1' else 2}" in c
        assert (f"--config.refusal.fold_probes={w}/sft_fold_a,{w}/sft_fold_b" in c) == variant.startswith("fold")
  collects = [c for c in by_module["experiments.refusal"] if "--collect" in c]
  assert f"-m experiments.refusal --collect={tmp_path}/out/mid/made48/s0,{tmp_path}/out/mid/made48/s1,{tmp_path}/out/mid/made48/s2" in collects
  assert len(collects) == 2 * 4


def test_refusal_scale_names_a_failed_run_goes_on_and_exits_1(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "pipeline_done.json").write_text("{}")
  r, calls = _refusal_scale(tmp_path, fail="made48/s1", DATA=str(data), ARMS="mid", VARIANTS="recipe made48")
  out = tmp_path / "out" / "mid"
  assert r.returncode == 1, r.stderr
  # the run, and the --collect that needs it; the other variant's table is still made
  assert f"failed: {out}/made48.s1.out\nfailed: {out}/made48.collect.out\n2 command(s) failed" in r.stderr, r.stderr
  assert (out / "made48.s1.out").read_text().strip() == "boom"
  assert sum("--config.seed=2" in c and "made48/s2" in c for c in calls) == 1  # the rest went on
  assert "== mid/recipe" in r.stdout


@pytest.mark.parametrize("env, message", [
    ({"VARIANTS": "recipe bogus"}, "VARIANTS: unknown variant 'bogus'"),
    ({"ARMS": "wide huge"}, "ARMS: unknown arm 'huge'"),
    ({"DATA": "/nonexistent/data"}, "DATA=/nonexistent/data is not a finished pipeline data stage"),
])
def test_refusal_scale_bad_settings_exit_2_with_one_line(tmp_path, env, message):
  data = tmp_path / "data"
  data.mkdir()
  (data / "pipeline_done.json").write_text("{}")
  r, calls = _refusal_scale(tmp_path, **{"DATA": str(data), **env})
  assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert not calls
