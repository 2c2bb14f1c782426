"""Run a config file's sweep: one experiment per point, each in its own workdir.

    python -m launch.sweep --config=configs/pretrain.py:tiny --sweep=sweep_lr --workdir=runs/lr_sweep

A sweep is a function in the config file returning a list of points, each a
dict of dotted config keys → values (`[{"opt.lr": 1e-3}, ...]`). Every key is
checked against the config before anything starts. Point i runs with
`--workdir=<workdir>/<name>` (name like `opt.lr=0.001`) and one
`--config.<key>=<value>` per key; further `--config.key=value` flags given here
apply to every point.

Launchers (--launcher):
  local   each point through launch/local.sh, --parallel at a time; then
          <workdir>/sweep.md and sweep.png (final val/loss per point)
  print   one `python -m experiments.<kind> ...` line per point, nothing run
  slurm   one `sbatch launch/slurm.sbatch ...` job per point
  tpu_vm  the points one after another on the TPU VM named by TPU_NAME/ZONE
  xpk     one GKE workload per point (CLUSTER/TPU_TYPE as for launch/gke_xpk.sh)
--dry_run prints what would run. --summarize only rewrites sweep.md from the
points' metrics.jsonl (after a Slurm sweep on a shared filesystem, say).
--collect writes sweep.md for the `seed=<s>` workdirs already under --workdir,
whatever ran them (launch/pipeline.sh with SEEDS does), no config needed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = ("local", "print", "slurm", "tpu_vm", "xpk")


class SweepError(Exception):
  """A mistake in the command line, the config file or the sweep: reported in one line."""


def load_config(spec: str):
  """`path/to/file.py[:arg]` → the module and its `get_config(arg)`, as config_flags does."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise SweepError(f"--config: no such file {path!r}")
  if ROOT not in sys.path:  # config files import `configs.base`
    sys.path.insert(0, ROOT)
  name = "sweep_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise SweepError(f"--config: {path} has no get_config()")
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    raise SweepError(f"--config: {e}") from None
  return module, config


def sweep_points(module, sweep: str) -> list[dict[str, Any]]:
  fn = getattr(module, sweep, None)
  if not callable(fn):
    raise SweepError(f"--sweep: {module.__file__} has no function {sweep!r}")
  points = fn()
  if not points or not all(isinstance(p, dict) for p in points):
    raise SweepError(f"--sweep: {sweep}() must return a non-empty list of dicts")
  return [dict(p) for p in points]


def _lookup(config, key: str, where: str):
  """(parent ConfigDict, leaf name) of a dotted key, or a SweepError naming the first unknown part."""
  import ml_collections
  node, parts = config, key.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise SweepError(f"{where}: unknown config key {'.'.join(parts[:depth + 1])!r} "
                       f"(every key must be declared in the config file)")
    parent, node = node, node[part]
  return parent, parts[-1]


def check_point(config, point: dict[str, Any], where: str) -> None:
  """Unknown keys and values of the wrong type fail here, not in the middle of a sweep."""
  for key, value in point.items():
    parent, leaf = _lookup(config, key, where)
    try:  # ConfigDict type-checks assignments (int → float is allowed)
      parent.copy_and_resolve_references()[leaf] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f"{where}: {key}={value!r}: {str(e).splitlines()[0]}") from None


def format_value(value: Any) -> str:
  """A value as config_flags parses it back."""
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def point_name(point: dict[str, Any]) -> str:
  def short(v):
    return f"{v:g}" if isinstance(v, float) else format_value(v)
  name = ",".join(f"{k}={short(v)}" for k, v in point.items())
  return name.replace("/", "_").replace(" ", "")


def overrides(point: dict[str, Any]) -> list[str]:
  return [f"--config.{k}={format_value(v)}" for k, v in point.items()]


def parse_extra(extra: Sequence[str]) -> dict[str, str]:
  """`--config.a.b=v` flags shared by every point (kept as strings: config_flags parses them)."""
  shared = {}
  for flag in extra:
    if not flag.startswith("--config.") or "=" not in flag:
      raise SweepError(f"unexpected argument {flag!r} (only --config.key=value overrides pass through)")
    key, value = flag[len("--config."):].split("=", 1)
    shared[key] = value
  return shared


def experiment_module(config_path: str, experiment: str | None) -> str:
  kind = experiment or os.path.splitext(os.path.basename(config_path))[0]
  kind = kind.removeprefix("experiments.")
  if not os.path.isfile(os.path.join(ROOT, "experiments", f"{kind}.py")):
    raise SweepError(f"no experiments/{kind}.py for {config_path}: name one with --experiment=<kind>")
  return f"experiments.{kind}"


def _for_root(path: str) -> str:
  """Paths in commands are relative to the repository root, where the launchers run."""
  if "://" in path:
    return path
  path = os.path.abspath(path)
  rel = os.path.relpath(path, ROOT)
  return path if rel.startswith("..") else rel


def plan(args, extra: Sequence[str]) -> tuple[str, list[dict[str, Any]], list[list[str]], list[str]]:
  """→ experiment module, points, per-point experiment arguments, per-point workdirs."""
  config_path, _, config_arg = args.config.partition(":")
  module, config = load_config(args.config)
  points = sweep_points(module, args.sweep)
  shared = parse_extra(extra)
  for key in shared:  # values stay strings: config_flags parses and type-checks them
    _lookup(config, key, "override")
  for i, point in enumerate(points):
    check_point(config, point, f"{args.sweep}() point {i}")
  names = [point_name(p) for p in points]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise SweepError(f"{args.sweep}(): points share the workdir name {dupes[0]!r}")
  exp = experiment_module(config_path, args.experiment)
  config_flag = _for_root(config_path) + (f":{config_arg}" if config_arg else "")
  workdirs = [_for_root(args.workdir).rstrip("/") + "/" + n for n in names]
  shared_flags = [f"--config.{k}={v}" for k, v in shared.items()]
  argv = [[f"--config={config_flag}", f"--workdir={wd}", *overrides(p), *shared_flags]
          for p, wd in zip(points, workdirs)]
  return exp, points, argv, workdirs


def commands(launcher: str, exp: str, argv: list[list[str]], workdirs: list[str],
             sweep: str) -> list[tuple[dict[str, str], list[str]]]:
  """(extra environment, command) per point, to run from the repository root."""
  stamp = time.strftime("%m%d%H%M")
  out = []
  for i, (args, wd) in enumerate(zip(argv, workdirs)):
    if launcher == "local":
      out.append(({}, ["bash", "launch/local.sh", exp, *args]))
    elif launcher == "print":
      out.append(({}, ["python", "-m", exp, *args]))
    elif launcher == "slurm":
      out.append(({}, ["sbatch", f"--job-name={sweep}-{i}", f"--output={wd}/slurm-%j.out",
                       "launch/slurm.sbatch", exp, *args]))
    elif launcher == "tpu_vm":
      out.append(({}, ["bash", "launch/tpu_vm.sh", exp, *args]))
    elif launcher == "xpk":
      out.append(({"WORKLOAD": f"{sweep}-{stamp}-{i}"}, ["bash", "launch/gke_xpk.sh", exp, *args]))
  return out


def shell_line(env: dict[str, str], cmd: list[str]) -> str:
  return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(c) for c in cmd])


def _local(path: str) -> str:
  return path if os.path.isabs(path) or "://" in path else os.path.join(ROOT, path)


def run_local(cmds, workdirs: list[str], parallel: int) -> list[int]:
  """Runs the points, `parallel` at a time; with more than one, each point's output goes to <workdir>/sweep.log."""
  codes: list[int | None] = [None] * len(cmds)
  running: list[tuple[int, subprocess.Popen, Any]] = []
  pending = list(range(len(cmds)))
  while pending or running:
    while pending and len(running) < parallel:
      i = pending.pop(0)
      env, cmd = cmds[i]
      print(f"[sweep {i + 1}/{len(cmds)}] {shell_line(env, cmd)}", flush=True)
      log = None
      if parallel > 1:
        os.makedirs(_local(workdirs[i]), exist_ok=True)
        log = open(os.path.join(_local(workdirs[i]), "sweep.log"), "a")
      proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                              stderr=subprocess.STDOUT if log else None)
      running.append((i, proc, log))
    time.sleep(0.2)
    for item in list(running):
      i, proc, log = item
      if proc.poll() is not None:
        codes[i] = proc.returncode
        if log:
          log.close()
        running.remove(item)
        if proc.returncode:
          print(f"[sweep] point {workdirs[i]} failed with exit code {proc.returncode}", flush=True)
  return [int(c) for c in codes]


def final_val_loss(workdir: str) -> tuple[int, float] | None:
  """(step, val/loss) of the last evaluation in <workdir>/metrics.jsonl, or None."""
  path = os.path.join(_local(workdir), "metrics.jsonl")
  if not os.path.exists(path):
    return None
  last = None
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
        continue
      if "val/loss" in row:
        last = (int(row.get("step", -1)), float(row["val/loss"]))
  return last


def _metric_rows(workdir: str) -> list[dict]:
  """The rows of <workdir>/metrics.jsonl that parse (a killed run may leave a partial last line)."""
  path = os.path.join(_local(workdir), "metrics.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          continue
  return rows


def final_metrics(workdir: str) -> dict[str, float]:
  """The last value of every metric in <workdir>/metrics.jsonl."""
  path = os.path.join(_local(workdir), "metrics.jsonl")
  out: dict[str, float] = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          out.update({k: v for k, v in json.loads(line).items() if k != "step"})
        except json.JSONDecodeError:
          continue
  return out


def seed_table(workdirs: list[str]) -> list[str]:
  """Markdown rows: each held-out metric's mean ± standard deviation over the runs (seeds)."""
  import statistics
  finals = [final_metrics(w) for w in workdirs]
  keys = sorted({k for m in finals for k in m if k.startswith(("val/", "eval/", "time/"))})
  lines = ["| metric | mean | std | runs | per run |", "|---|---|---|---|---|"]
  for k in keys:
    vals = [m[k] for m in finals if isinstance(m.get(k), (int, float))]  # null: written for non-finite
    if not vals:
      continue
    std = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    lines.append(f"| {k} | {statistics.mean(vals):.3f} | {std:.3f} | {len(vals)} | "
                 + ", ".join(f"{v:.3f}" for v in vals) + " |")
  return lines


def start_final_table(workdirs: list[str]) -> list[str]:
  """Markdown rows: each held-out metric at the first evaluation (step 0: the starting model, e.g.
  SFT alone) and at the last (e.g. SFT then RL), and the change, mean ± std over the runs.
  Empty when the runs evaluated no step 0."""
  import statistics

  def ms(vals):
    return f"{statistics.mean(vals):.3f} ± {statistics.pstdev(vals) if len(vals) > 1 else 0.0:.3f}"

  def held_out(row):  # finite held-out numbers of one metrics line (non-finite ones are written as null)
    return {k: v for k, v in row.items() if k.startswith(("val/", "eval/")) and isinstance(v, (int, float))}

  starts, finals = [], []
  for w in workdirs:
    evals = [(r.get("step"), held_out(r)) for r in _metric_rows(w)]
    evals = [(s, e) for s, e in evals if e]
    if evals and evals[0][0] == 0 and evals[-1][0] != 0:  # the start, and the last evaluation as the end
      starts.append(evals[0][1])
      finals.append(evals[-1][1])
  keys = sorted(k for k in set.intersection(*map(set, starts)) if all(k in f for f in finals)
                and not k.endswith("_gain")) if starts else []
  if not keys:
    return []
  lines = ["| metric | start (step 0) | end (last evaluation) | change | runs |", "|---|---|---|---|---|"]
  for k in keys:
    a, b = [s[k] for s in starts], [f[k] for f in finals]
    lines.append(f"| {k} | {ms(a)} | {ms(b)} | {ms([y - x for x, y in zip(a, b)])} | {len(a)} |")
  return lines


def _plot(path: str, points, names, losses, title: str) -> bool:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  have = [i for i, l in enumerate(losses) if l is not None]
  if not have:
    return False
  keys = list(points[0])
  numeric = (len(keys) == 1 and all(list(p) == keys for p in points)
             and all(isinstance(p[keys[0]], (int, float)) and not isinstance(p[keys[0]], bool)
                     for p in points))
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  if numeric:
    xs = [points[i][keys[0]] for i in have]
    order = sorted(range(len(have)), key=lambda j: xs[j])
    ax.plot([xs[j] for j in order], [losses[have[j]] for j in order], "o-")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:  # learning rates and the like span decades
      ax.set_xscale("log")
    ax.set_xlabel(keys[0])
  else:
    ax.bar(range(len(have)), [losses[i] for i in have])
    ax.set_xticks(range(len(have)), [names[i] for i in have], rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("final val/loss")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return True


CURVE_METRICS = ("eval/pass@1", "val/loss")  # the first one the runs have is drawn per seed


def _seed_curves(path: str, names: list[str], workdirs: list[str]) -> str | None:
  """One line per seed of the first CURVE_METRICS metric the runs logged, against step."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = [_metric_rows(w) for w in workdirs]
  metric = next((m for m in CURVE_METRICS if any(m in r for rows in runs for r in rows)), None)
  if metric is None:
    return None
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, rows in zip(names, runs):
    pts = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
    if pts:
      ax.plot(*zip(*pts), "o-", ms=3, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel(metric)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return metric


def write_summary(sweep_dir: str, points: list[dict[str, Any]], workdirs: list[str],
                  returncodes: list[int] | None = None, title: str = "sweep") -> str:
  """<sweep_dir>/sweep.md: one row per point with its final val/loss, and sweep.png beside it."""
  sweep_dir = _local(sweep_dir)
  os.makedirs(sweep_dir, exist_ok=True)
  names = [os.path.basename(w.rstrip("/")) for w in workdirs]
  results = [final_val_loss(w) for w in workdirs]
  losses = [r[1] if r else None for r in results]
  keys = list(dict.fromkeys(k for p in points for k in p))
  lines = [f"# {title}", "", "| point | " + " | ".join(keys) + " | step | final val/loss |",
           "|---|" + "---|" * len(keys) + "---|---|"]
  for i, (point, name, result) in enumerate(zip(points, names, results)):
    values = [format_value(point[k]) if k in point else "" for k in keys]
    if result:
      step, loss = str(result[0]), f"{result[1]:.4f}"
    else:
      rc = returncodes[i] if returncodes else 0
      step, loss = "—", f"failed (exit {rc})" if rc else "no val/loss yet"
    lines.append(f"| {name} | " + " | ".join(values) + f" | {step} | {loss} |")
  if any(l is not None for l in losses):
    best = min((l, i) for i, l in enumerate(losses) if l is not None)[1]
    lines += ["", f"Best: `{names[best]}` (final val/loss {losses[best]:.4f})."]
  if _plot(os.path.join(sweep_dir, "sweep.png"), points, names, losses, title):
    lines += ["", "![final val/loss per point](sweep.png)"]
  if keys == ["seed"] and len(points) > 1:  # a seed sweep: the spread is the result
    lines += ["", f"## Across {len(points)} seeds (final values)", ""] + seed_table(workdirs)
    start_end = start_final_table(workdirs)
    if start_end:
      lines += ["", f"## Start (step 0) against end, mean ± std over the seeds", ""] + start_end
    curve = _seed_curves(os.path.join(sweep_dir, "seeds.png"), names, workdirs)
    if curve:
      lines += ["", f"![{curve} per seed against step](seeds.png)"]
  path = os.path.join(sweep_dir, "sweep.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def collect_seeds(sweep_dir: str) -> int:
  """sweep.md for the `seed=<s>` subfolders of sweep_dir (runs made by any launcher)."""
  folder = _local(sweep_dir)
  seeds = sorted(int(n.split("=", 1)[1]) for n in (os.listdir(folder) if os.path.isdir(folder) else [])
                 if n.startswith("seed=") and n.split("=", 1)[1].isdigit())
  if not seeds:
    print(f"error: --collect: no seed=<s> workdirs under {sweep_dir!r}", file=sys.stderr)
    return 2
  points = [{"seed": s} for s in seeds]
  workdirs = [os.path.join(sweep_dir, f"seed={s}") for s in seeds]
  print(write_summary(sweep_dir, points, workdirs, title=f"seeds of {sweep_dir}"))
  return 0


def parse_args(argv: Sequence[str]):
  p = argparse.ArgumentParser(prog="python -m launch.sweep", allow_abbrev=False,
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--config", help="configs/<file>.py[:arg]")
  p.add_argument("--sweep", help="name of the sweep function in the config file")
  p.add_argument("--workdir", required=True, help="parent folder of the points' workdirs")
  p.add_argument("--launcher", default="local", choices=LAUNCHERS)
  p.add_argument("--parallel", type=int, default=1, help="local: points run at once")
  p.add_argument("--experiment", default=None, help="experiments.<kind> (default: the config file's name)")
  p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  p.add_argument("--summarize", action="store_true", help="only (re)write <workdir>/sweep.md")
  p.add_argument("--collect", action="store_true", help="sweep.md of the seed=<s> workdirs under --workdir")
  return p.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args, extra = parse_args(sys.argv[1:] if argv is None else argv)
  if args.collect:
    return collect_seeds(args.workdir)
  try:
    if not (args.config and args.sweep):
      raise SweepError("--config and --sweep are required (or --collect)")
    if args.parallel < 1:
      raise SweepError(f"--parallel must be at least 1, got {args.parallel}")
    exp, points, exp_argv, workdirs = plan(args, extra)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  title = f"{args.sweep} ({args.config})"
  if args.summarize:
    print(write_summary(args.workdir, points, workdirs, title=title))
    return 0
  cmds = commands(args.launcher, exp, exp_argv, workdirs, args.sweep)
  if args.dry_run or args.launcher == "print":
    for env, cmd in cmds:
      print(shell_line(env, cmd))
    return 0
  if args.launcher == "local":
    codes = run_local(cmds, workdirs, args.parallel)
    print(write_summary(args.workdir, points, workdirs, codes, title=title))
    return 1 if any(codes) else 0
  failed = 0
  for (env, cmd), wd in zip(cmds, workdirs):
    if args.launcher == "slurm" and "://" not in wd:
      os.makedirs(_local(wd), exist_ok=True)  # sbatch --output needs the folder to exist
    print(shell_line(env, cmd), flush=True)
    failed += subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}).returncode != 0
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
