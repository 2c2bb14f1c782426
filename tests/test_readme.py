"""The README is executable: every command it shows is checked (fast) and run as written (slow).

Fast (no runs, ~1 s once JAX is imported): every `python -m` module exists, every `--config=` file and
arg, every `--config.key` and flag it passes; the overrides the slow test shrinks with are the ones the
README documents; no two commands write the same workdir (launch/pipeline.sh's defaults included).

Slow (`-m slow`): a copy of the repository (`git ls-files`, `.venv` linked to this test's environment,
`../shared` beside it), and every command in README order, each from a fresh `bash` with a clean
environment (no venv on PATH, no PYTHONPATH) after the README's own `source .venv/bin/activate`,
shrunk only by the overrides the README documents. What it cannot run on one CPU machine (a cluster,
a bucket, a Hugging Face folder, the test suite itself) is listed in PLAN with the reason, and the
cloud launchers run with DRY_RUN=1 as the README says.
"""
from __future__ import annotations

import ast
import dataclasses
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
ACTIVATE = "source .venv/bin/activate"


@dataclasses.dataclass
class Command:
  text: str          # as the README shows it (continuations joined)
  env: dict          # VAR=value words in front
  words: list        # the command's words after them
  line: int          # README line where it starts

  @property
  def module(self) -> str | None:
    """experiments.x / launch.x for `python -m` and `bash launch/local.sh`; None otherwise."""
    w = self.words
    if w[:2] == ["python", "-m"]:
      return w[2]
    if w[:2] == ["bash", "launch/local.sh"]:
      return w[2]
    if w and w[0] == "sbatch":
      return w[w.index("launch/slurm.sbatch") + 1]
    if w[:1] == ["bash"] and w[1] in ("launch/tpu_vm.sh", "launch/gke_xpk.sh"):
      return w[2]
    return None

  @property
  def args(self) -> list[str]:
    w = self.words
    if self.module is None:
      return w[2:] if w[:1] == ["bash"] else w[1:]
    return w[w.index(self.module) + 1:]


def readme_commands(path: str = README) -> list[Command]:
  """Every command in the README's ```bash blocks, and the `$ ` lines of its plain ``` blocks."""
  out, block, lines = [], None, open(path, encoding="utf-8").read().splitlines()
  i = 0
  while i < len(lines):
    line = lines[i]
    if line.startswith("```"):
      block = None if block is not None else line[3:].strip()
      i += 1
      continue
    if block is None or (block != "bash" and not line.startswith("$ ")):
      i += 1
      continue
    start, text = i + 1, line[2:] if line.startswith("$ ") else line
    while text.rstrip().endswith("\\"):
      i += 1
      text = text.rstrip()[:-1].rstrip() + " " + lines[i].strip()
    i += 1
    words = shlex.split(text, comments=True)
    if not words:
      continue
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
      k, v = words.pop(0).split("=", 1)
      env[k] = v
    text = text.split(" # ")[0].strip() if " # " in text else text.strip()
    out.append(Command(text, env, words, start))
  return out


# What the slow test does with each command, first match wins: ("run", extra args) appends the
# README's documented shrink overrides; ("dry", None) runs it with DRY_RUN=1 (for sbatch: `bash
# launch/slurm.sbatch` with the module's args); ("skip", reason). A command no rule matches fails the
# fast test, so a new README command must be placed here.
STEPS = ["--config.train.steps=2"]
POST = ["--config.train.steps=2", "--config.eval.examples=8"]
PLAN: list[tuple[str, tuple]] = [
    (r"^source \.venv/bin/activate$", ("setup", None)),
    (r"pytest", ("skip", "the test suite itself (CI runs it; this test is part of it)")),
    (r"experiments\.pipeline ", ("skip", "the whole journey: tests/test_pipeline.py's slow test runs this command "
                                         "as written (~30 min)")),
    (r"^(TPU_NAME|CLUSTER)=.* bash launch/(tpu_vm|gke_xpk)\.sh", ("dry", None)),
    (r"^sbatch ", ("dry", None)),
    (r"gs://|=/data/shards", ("skip", "needs a GCS bucket / prepared shards and an accelerator")),
    (r"--launcher=(slurm|tpu_vm|xpk)", ("skip", "a cluster launcher (its dry run is tests/test_launch.py's)")),
    (r"hf_dir=path/to|/models/|\.data\.path=rankings\.jsonl|chats\.jsonl",
     ("skip", "needs a Hugging Face folder or the user's own data file")),
    (r"experiments\.ablate (?!.*--config\.launcher=)", ("skip", "starts from the whole pipeline's workdir (skipped "
                                                               "above); tests/test_ablations.py runs it with stand-ins")),
    (r"experiments\.chat ", ("run", [])),  # stdin is empty: it exits at the first prompt
    (r"experiments\.bench ", ("run", ["--config.rounds=1", "--config.steps=2", "--config.peer=False"])),
    (r"^STEPS=|launch/pipeline\.sh$|launch/pipeline\.sh ", ("run", [])),  # its env shrink is added below
    (r"experiments\.gold_rankings ", ("run", ["--prompts=16"])),
    (r"experiments\.(sft|grpo|refusal|injection) --config", ("run", POST)),
    (r"experiments\.reward_model --config", ("run", STEPS)),
    (r"experiments\.pretrain ", ("run", STEPS)),
    (r"launch\.sweep --config=.* --sweep=sweep_seeds", ("run", POST)),
    (r"launch\.sweep --config=.*--launcher=print", ("run", [])),
    (r"launch\.sweep --config=", ("run", STEPS)),
    (r"", ("run", [])),  # sample, compile, data steps, --collect, knowledge, rlhf_report: as written
]
PIPELINE_SH_SHRINK = {"STEPS": "20", "SFT_STEPS": "10"}


def plan_for(cmd: Command) -> tuple:
  text = " ".join([f"{k}={v}" for k, v in cmd.env.items()] + [cmd.text.split(" ", len(cmd.env))[-1]])
  for pattern, action in PLAN:
    if re.search(pattern, text):
      return action
  raise AssertionError(f"README line {cmd.line}: no PLAN entry for {cmd.text!r}")


# --- fast --------------------------------------------------------------------------------------------

def _defined_flags(module: str) -> set[str]:
  path = os.path.join(ROOT, *module.split(".")) + ".py"
  src = open(path).read()
  names = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", src)) | set(re.findall(r"add_argument\(\s*\"--(\w+)\"", src))
  if "cli.model_flags()" in src:
    names |= set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", open(os.path.join(ROOT, "lm", "cli.py")).read()))
  return names | {"verbose", "helpfull"}


def _config_args(config_file: str) -> tuple:
  tree = ast.parse(open(os.path.join(ROOT, config_file)).read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGS" for t in node.targets):
      return ast.literal_eval(node.value)
  raise AssertionError(f"{config_file} has no ARGS")


def test_readme_shows_the_activation_and_every_command_is_planned():
  cmds = readme_commands()
  assert cmds[0].words[:2] == ["bash", "launch/local.sh"], "the first command creates .venv"
  assert any(c.text == ACTIVATE for c in cmds), f"the README must say `{ACTIVATE}` in a bash block"
  assert len(cmds) > 40
  for c in cmds:
    plan_for(c)
    assert "..." not in c.text and "[" not in c.text.replace("[tpu]", ""), \
        f"README line {c.line}: not runnable as written: {c.text!r}"
    if c.words[0] == "python":
      assert c.words[1] == "-m", c.text


def test_readme_modules_configs_and_flags_exist():
  import importlib
  for c in readme_commands():
    mod = c.module
    if mod is None or mod == "pytest":
      continue
    assert os.path.isfile(os.path.join(ROOT, *mod.split(".")) + ".py"), f"README line {c.line}: no module {mod}"
    flags = _defined_flags(mod)
    config = None
    kind, extra = plan_for(c)
    for a in c.args + (extra or [] if kind == "run" else []):  # the slow test's shrink flags too
      if not a.startswith("--"):
        continue
      name, _, value = a[2:].partition("=")
      if name == "config":
        file, _, arg = value.partition(":")
        assert os.path.isfile(os.path.join(ROOT, file)), f"README line {c.line}: no {file}"
        assert not arg or arg in _config_args(file), f"README line {c.line}: {file} has no arg {arg!r}"
        module = importlib.import_module(file[:-3].replace("/", "."))
        config = module.get_config(arg) if arg else module.get_config()
      elif name.startswith("config."):
        assert config is not None, f"README line {c.line}: {name} before --config"
        node = config
        for key in name.split(".")[1:]:
          assert key in node, f"README line {c.line}: {value!r}: no config key {name[7:]!r} in {c.text!r}"
          node = node[key]
      else:
        assert name in flags, f"README line {c.line}: {mod} has no flag --{name}"


def test_readme_documents_the_shrink_overrides():
  text = open(README, encoding="utf-8").read()
  for _, (kind, extra) in PLAN:
    for a in extra or []:
      assert a.split("=")[0] in text, f"the slow test shrinks with {a}, which the README does not document"
  for k, v in PIPELINE_SH_SHRINK.items():
    assert f"{k}={v}" in text


_WRITERS = ("experiments.pretrain", "experiments.sft", "experiments.grpo", "experiments.reward_model",
            "experiments.refusal", "experiments.pipeline", "experiments.prepare_data", "experiments.train_tokenizer",
            "experiments.tokenize_data", "experiments.gold_rankings", "launch.sweep")
_DATA_CHAIN = {"experiments.prepare_data", "experiments.train_tokenizer", "experiments.tokenize_data"}


def _pipeline_sh_workdirs(env: dict) -> list[tuple[str, str]]:
  """(workdir, step) of each step launch/pipeline.sh would run with `env`, from its own dry run."""
  r = subprocess.run(["bash", os.path.join(ROOT, "launch", "pipeline.sh")], env={**os.environ, **env, "DRY_RUN": "1"},
                     capture_output=True, text=True, timeout=30, check=True)
  out = []
  for line in r.stdout.splitlines():
    words = shlex.split(line)
    out += [(w.split("=", 1)[1], "pipeline.sh " + words[2]) for w in words if w.startswith("--workdir=")]
  return out


def _written(c: Command) -> list[tuple[str, str]]:
  """(workdir or output file, what writes it) for a command that writes one."""
  mod = c.module
  if mod is None and c.words[:2] == ["bash", "launch/pipeline.sh"]:
    return _pipeline_sh_workdirs(c.env)
  if mod not in _WRITERS or any(a.startswith(("--collect", "--summarize", "--launcher=print")) for a in c.args):
    return []
  out = [a.split("=", 1)[1] for a in c.args if a.startswith(("--workdir=", "--out="))]
  return [(o.rstrip("/"), mod) for o in out]


def test_no_two_readme_commands_write_the_same_workdir():
  owners: dict[str, tuple[str, str]] = {}
  seen = set()
  for c in readme_commands():
    if c.text in seen:  # the same command shown twice
      continue
    seen.add(c.text)
    for wd, what in _written(c):
      if wd in owners:
        other_what, other = owners[wd]
        chain = {w.split()[-1] for w in (what, other_what)}  # pipeline.sh's data steps share its data workdir
        same_chain = chain <= _DATA_CHAIN and what != other_what and \
            what.startswith("pipeline.sh") == other_what.startswith("pipeline.sh")
        # the pipeline again with a subset of its stages (`python -m` or `launch/local.sh`): the same run, continued
        subset = c.module == other.module and c.args[:len(other.args)] == other.args and all(
            a.startswith("--config.stages=") for a in c.args[len(other.args):])
        assert same_chain or subset, f"README: {other.text!r} and {c.text!r} both write {wd}"
      owners[wd] = (what, c)
  defaults = {wd for wd, _ in _pipeline_sh_workdirs({})}
  assert defaults == {"runs/data", "runs/base", "runs/sft"}, defaults  # not runs/tiny, the smallest run's


# --- slow --------------------------------------------------------------------------------------------

def _fresh_copy(tmp_path) -> str:
  """`git ls-files` of this checkout (tracked and untracked, not ignored) in <tmp>/repo, with .venv linked
  to the environment running this test and ../shared linked beside it, as on the project's VM."""
  repo = tmp_path / "repo"
  listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
  for rel in filter(None, listing):
    src = os.path.join(ROOT, rel)
    if os.path.isfile(src):
      os.makedirs(repo / os.path.dirname(rel), exist_ok=True)
      shutil.copy2(src, repo / rel)
  os.symlink(sys.prefix, repo / ".venv")
  shared = os.path.join(os.path.dirname(ROOT), "shared")
  if os.path.isdir(shared):
    os.symlink(shared, tmp_path / "shared")
  return str(repo)


def _fresh_env(tmp_path) -> dict[str, str]:
  """What a new login shell has: no venv on PATH, no PYTHONPATH, no project variables."""
  venv_bin = os.path.join(sys.prefix, "bin")
  path = ":".join(p for p in os.environ["PATH"].split(":") if os.path.realpath(p) != os.path.realpath(venv_bin))
  keep = ("HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "JAX_COMPILATION_CACHE_DIR")
  return {"PATH": path, **{k: os.environ[k] for k in keep if k in os.environ}}


def _shell_line(c: Command, action: tuple) -> str:
  kind, extra = action
  env = dict(c.env)
  words = list(c.words)
  if kind == "dry":
    env["DRY_RUN"] = "1"
    if words[0] == "sbatch":
      words = ["bash", "launch/slurm.sbatch", *words[words.index("launch/slurm.sbatch") + 1:]]
  if words[:2] == ["bash", "launch/pipeline.sh"]:
    env.update(PIPELINE_SH_SHRINK)
  words += extra or []
  return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(w) for w in words])


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
  """Hours of work at full size; shrunk as the README documents, about half an hour on 2 CPU cores."""
  stamp = glob.glob(os.path.join(sys.prefix, ".installed-*"))
  if not stamp:
    pytest.skip("this environment was not made by launch/local.sh (no .installed-* stamp): the README's "
                "launch/local.sh commands would install into it")
  repo = _fresh_copy(tmp_path)
  env = _fresh_env(tmp_path)
  log = open(tmp_path / "readme_commands.log", "w")
  results, failures, setup = [], [], ""
  for c in readme_commands():
    action = plan_for(c)
    if action[0] == "setup":
      setup = c.text + " && "
      continue
    if action[0] == "skip":
      results.append((c.line, "skip", 0.0, action[1]))
      continue
    line = _shell_line(c, action)
    t = time.perf_counter()
    r = subprocess.run(["bash", "-c", setup + line], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    secs = time.perf_counter() - t
    out = r.stdout.decode(errors="replace")
    log.write(f"\n### README line {c.line} ({secs:.0f} s, exit {r.returncode}): {line}\n{out[-4000:]}\n")
    log.flush()
    results.append((c.line, f"exit {r.returncode}", secs, line))
    if r.returncode != 0:
      failures.append(f"README line {c.line}: exit {r.returncode} after {secs:.0f} s: {line}\n  "
                      + "\n  ".join(out.strip().splitlines()[-5:]))
  summary = "\n".join(f"{ln:5d} {what:8s} {secs:6.0f} s  {detail}" for ln, what, secs, detail in results)
  print(summary)
  (tmp_path / "summary.txt").write_text(summary)
  assert not failures, "\n".join(failures) + f"\n(log: {tmp_path / 'readme_commands.log'})"
