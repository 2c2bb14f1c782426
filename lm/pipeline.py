"""The whole chain as one command: each stage a subprocess with its own workdir, a marker when done.

`plan(config, workdir)` turns configs/pipeline.py into stages, each a list of
commands (`python -m experiments.<x> ...`, the ones the README shows) and the
outputs that prove it finished. `run(...)` runs the selected stages in order:

- a stage whose <workdir>/<stage>/pipeline_done.json exists is skipped;
- otherwise its commands run one after another (an interrupted stage's experiments
  resume from their newest checkpoint; a finished experiment leaves itself alone),
  output tee'd to <workdir>/<stage>.log and passed through to the terminal;
- when every command exited 0 *and* the outputs are there (a training run stopped
  by SIGTERM also exits 0, but without its last step's checkpoint) the marker is
  written atomically: wall seconds, commands, exit code;
- a failure stops the pipeline with one line naming the stage, its log and the exit
  code (UserError), everything written so far left as it is;
- the report card (lm/report_card.py) is rewritten after every stage.

The runner is a parameter, so tests drive the logic with a fake one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import BinaryIO, Callable, Sequence, TextIO

from lm import stage_outputs
from lm.errors import UserError

DONE_FILE = "pipeline_done.json"
STAGES = ("data", "base", "sft", "sft_arith", "grpo", "sft_chat", "refusal", "rankings", "reward_model", "rlhf")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where `python -m experiments.x` runs


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  needs: tuple[str, ...]               # stages whose outputs this one reads
  commands: tuple[tuple[str, ...], ...]  # each: module and its flags (run as python -m ...)
  outputs: tuple[tuple[str, int], ...]  # (path, steps): a file that must exist (steps 0), or a
                                       # workdir whose newest checkpoint must be at least `steps`
  workdirs: tuple[str, ...] = ()        # the experiment workdirs under the stage (for the report card)

  def missing_output(self) -> str | None:
    """What is absent although the commands exited 0, or None when the stage's work is all there."""
    for path, steps in self.outputs:
      if steps == 0:
        if not os.path.exists(path):
          return f"{path} was not written"
      elif (step := newest_checkpoint(path)) is None or step < steps:
        return f"{path} stopped at step {step or 0} of {steps} (interrupted?)"
    return None


def newest_checkpoint(workdir: str) -> int | None:
  """The newest finished checkpoint's step (Orbax renames a step's folder to its number when complete)."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=None)


def parse_overrides(overrides: str, key: str) -> list[str]:
  """A config's `overrides` string → its flags, or one line naming `config.<key>`."""
  try:
    extra = shlex.split(overrides)
  except ValueError as e:
    raise UserError(f"config.{key}: {e} in {overrides!r}") from None
  if bad := [f for f in extra if not f.startswith("--")]:
    raise UserError(f"config.{key}: {bad[0]!r} is not a flag (give --name=value items separated by spaces)")
  return extra


def plan(config, workdir: str) -> list[Stage]:
  """Every stage of the chain, in order, with its commands built from the config."""
  wd = os.path.abspath(workdir)
  p = lambda *parts: os.path.join(wd, *parts)  # noqa: E731
  data, seed = p("data"), config.seed
  world, exposures = p("data", "crawl", "world.json"), p("data", "shards", "train", "exposures.json")
  facts = (f"--config.data.world={world}", f"--config.data.exposures={exposures}")
  extra = {name: parse_overrides(config[name].overrides, f"{name}.overrides") for name in STAGES}
  c = config

  data_flags = ("--config=configs/data.py:synthetic", f"--workdir={data}", f"--config.web.workers={c.data.workers}",
                f"--config.shards.workers={c.data.workers}", f"--config.tokenizer.vocab_size={c.data.vocab_size}",
                f"--config.shards.extra_fraction={c.data.extra_fraction}",
                f"--config.shards.copy_drills={c.data.copy_drills}",
                f"--config.shards.corpus_repeats={c.data.corpus_repeats}", *extra["data"])
  stages = [Stage("data", (), tuple((m, *data_flags) for m in (
      "experiments.prepare_data", "experiments.train_tokenizer", "experiments.tokenize_data")),
      ((p("data", "shards", "train", "meta.json"), 0), (p("data", "shards", "val", "meta.json"), 0),
       (world, 0), (exposures, 0)), (data,))]

  def train(name, module, cfg_file, steps, *flags, run_seed=seed):
    out = p(name)
    if "batch_size" in c.get(name, {}):  # the stages whose rows per step the pipeline sets
      flags += (f"--config.train.batch_size={c[name].batch_size}",)
    cmd = (module, f"--config={cfg_file}", f"--workdir={out}", *flags, f"--config.train.steps={steps}",
           f"--config.seed={run_seed}")
    return cmd, (out, steps)

  def stage(name, needs, *runs):
    cmds = tuple(cmd + tuple(extra[name]) for cmd, _ in runs)
    return Stage(name, needs, cmds, tuple(o for _, o in runs), tuple(o[0] for _, o in runs))

  stages.append(stage("base", ("data",), train(
      "base", "experiments.pretrain", "configs/pretrain.py:world", c.base.steps,
      f"--config.data.path={p('data', 'shards')}", f"--config.data.shuffle_seed={seed}")))
  stages.append(stage("sft", ("data", "base"), train(
      "sft", "experiments.sft", "configs/sft.py:tools", c.sft.steps,
      f"--config.init_from.workdir={p('base')}", *facts)))
  stages.append(stage("sft_arith", ("base",), train(
      "sft_arith", "experiments.sft", "configs/sft.py:arith", c.sft_arith.steps,
      f"--config.init_from.workdir={p('base')}", f"--config.train.eval_every={c.sft_arith.eval_every}")))
  stages.append(stage("grpo", ("sft_arith",), train(
      "grpo", "experiments.grpo", "configs/grpo.py:tiny", c.grpo.steps,
      f"--config.init_from.workdir={p('sft_arith')}", f"--config.train.eval_every={c.grpo.eval_every}",
      f"--config.train.ckpt_every={c.grpo.eval_every}")))
  stages.append(stage("sft_chat", ("data", "base"), train(
      "sft_chat", "experiments.sft", "configs/sft.py:tiny", c.sft_chat.steps,
      f"--config.init_from.workdir={p('base')}", *facts)))

  stages.append(stage("refusal", ("data", "base", "sft_chat"), train(
      "refusal", "experiments.refusal", "configs/refusal.py:tiny", c.refusal.steps,
      f"--config.init_from.workdir={p('base')}", f"--config.refusal.probe={p('sft_chat')}", *facts,
      f"--config.refusal.made_up={c.refusal.made_up}", f"--config.refusal.style={c.refusal.style}",
      f"--config.refusal.samples={c.refusal.samples}", f"--config.refusal.max_correct={c.refusal.max_correct}")))

  seeds = (seed, seed + 1) if c.rlhf.second_rm else (seed,)
  rankings = [p("rankings", f"seed{s}.jsonl") for s in seeds]
  stages.append(Stage("rankings", ("data", "sft_chat"), tuple(
      ("experiments.gold_rankings", f"--policy={p('sft_chat')}", f"--out={out}", f"--seed={s}",
       f"--prompts={c.rankings.prompts}", f"--k={c.rankings.k}", f"--world={world}", f"--exposures={exposures}",
       *extra["rankings"]) for s, out in zip(seeds, rankings)), tuple((r, 0) for r in rankings), (p("rankings"),)))

  # The second model has its own seed (head init, data order) and its own rankings.
  rms = [train("reward_model" if i == 0 else "reward_model_b", "experiments.reward_model",
               "configs/reward_model.py:tiny", c.reward_model.steps,
               f"--config.init_from.workdir={p('sft_chat')}", "--config.data.kind=ranked",
               f"--config.data.path={rankings[i]}", "--config.train.seq_len=96", "--config.train.batch_size=40",
               f"--config.train.eval_every={c.reward_model.eval_every}",
               f"--config.train.ckpt_every={c.reward_model.eval_every}", run_seed=s)
         for i, s in enumerate(seeds)]
  stages.append(stage("reward_model", ("sft_chat", "rankings"), *rms))

  stop = p("reward_model_b") if c.rlhf.second_rm else ""
  stages.append(stage("rlhf", ("data", "sft_chat", "reward_model"), train(
      "rlhf", "experiments.grpo", "configs/rlhf.py:tiny", c.rlhf.steps,
      f"--config.init_from.workdir={p('sft_chat')}", f"--config.reward.workdir={p('reward_model')}",
      f"--config.reward.stop_workdir={stop}", *facts, f"--config.train.eval_every={c.rlhf.eval_every}",
      f"--config.train.ckpt_every={c.rlhf.eval_every}", f"--config.eval.best_of_n={c.rlhf.best_of_n}")))
  assert tuple(s.name for s in stages) == STAGES
  return stages


def select(stages: Sequence[Stage], spec: str, workdir: str) -> list[Stage]:
  """The stages `spec` names (in pipeline order); each stage they read from is selected too or done."""
  names = [n.strip() for n in spec.split(",") if n.strip()]
  known = [s.name for s in stages]
  if not names:
    raise UserError(f"config.stages is empty; name some of {', '.join(known)}")
  if unknown := [n for n in names if n not in known]:
    raise UserError(f"config.stages: unknown stage {unknown[0]!r}; the stages are {', '.join(known)}")
  chosen = [s for s in stages if s.name in names]
  for s in chosen:
    for need in s.needs:
      if need not in names and not is_done(workdir, need):
        raise UserError(f"config.stages: stage {s.name!r} needs stage {need!r}, which has not finished in "
                        f"{workdir} (no {os.path.join(workdir, need, DONE_FILE)}); add {need} to config.stages")
  return chosen


def done_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, DONE_FILE)


def is_done(workdir: str, name: str) -> bool:
  return os.path.exists(done_path(workdir, name))


def read_done(workdir: str, name: str) -> dict | None:
  try:
    with open(done_path(workdir, name)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


class Interrupted(Exception):
  """The pipeline got SIGINT/SIGTERM and passed it to its stage, which saved (if it trains) and stopped."""

  def __init__(self, signum: int, returncode: int, stage: str = ""):
    super().__init__(signal.Signals(signum).name)
    self.signum, self.returncode, self.stage = signum, returncode, stage


Runner = Callable[[Sequence[str], str], int]  # (argv, log path) → exit status


def subprocess_runner(env: dict | None = None, echo: BinaryIO | None = None) -> Runner:
  """Runs argv in the project root, its stdout and stderr tee'd to the log and to `echo` (a binary
  stream; default this process's stdout) as they come, in byte chunks, so progress bars that redraw
  with \\r pass through. SIGINT / SIGTERM to the pipeline
  are passed to the stage (its own session, so a terminal's Ctrl-C reaches it once, through us), and
  the stage gets SIGTERM if the pipeline dies (Linux)."""
  out = echo if echo is not None else getattr(sys.stdout, "buffer", None)

  def run(argv: Sequence[str], log_path: str) -> int:
    received: list[int] = []
    with open(log_path, "ab") as log:
      log.write(f"$ {shlex.join(argv)}\n".encode())
      log.flush()
      proc = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)

      def forward(signum, _frame):
        received.append(signum)
        proc.send_signal(signum)

      main = threading.current_thread() is threading.main_thread()
      old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
      try:
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
          log.write(chunk)
          log.flush()
          if out is not None:
            out.write(chunk)
            out.flush()
        rc = proc.wait()
      finally:
        for s, handler in old.items():
          signal.signal(s, handler)
    if received:
      raise Interrupted(received[0], rc)
    return rc

  return run


def _die_with_parent() -> None:
  """In the child: SIGTERM when the pipeline process dies (so a killed pipeline leaves no orphan
  training holding its workdir's lock)."""
  if sys.platform.startswith("linux"):
    import ctypes
    try:
      ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
      pass


def last_line(log_path: str) -> str:
  """The log's last non-empty line (progress-bar redraws split on \\r), for the failure message."""
  try:
    with open(log_path, "rb") as f:
      f.seek(max(0, os.path.getsize(log_path) - 8192))
      tail = f.read().decode("utf-8", "replace")
  except OSError:
    return ""
  lines = [l.strip() for l in tail.replace("\r", "\n").splitlines() if l.strip()]
  return lines[-1][:300] if lines else ""


def _describe_exit(rc: int) -> str:
  if rc < 0:
    try:
      return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:
      return f"was killed by signal {-rc}"
  return f"exited with code {rc}"


def duration(s: float) -> str:
  """'42 s' below 90 s, else '3.5 min' (the pipeline's lines and the report card)."""
  return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def run(config, workdir: str, runner: Runner, log: TextIO = sys.stdout,
        card: Callable[[str, list[Stage]], object] | None = None) -> list[str]:
  """Runs the selected stages; returns the names of those that ran (not skipped)."""
  workdir = os.path.abspath(workdir)
  stages = plan(config, workdir)
  return run_stages(stages, select(stages, config.stages, workdir), workdir, runner, log, card)


def run_stages(stages: list[Stage], chosen: Sequence[Stage], workdir: str, runner: Runner,
               log: TextIO = sys.stdout, card: Callable[[str, list[Stage]], object] | None = None,
               what: str = "pipeline") -> list[str]:
  """Runs `chosen` (of `stages`, all of which the card sees) in order, skipping finished ones.
  A stage's name may be a path ("arm/seed=0/grpo"): its marker and log go under that folder."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  ran: list[str] = []
  card_current = False
  t_all = time.perf_counter()
  try:
    for i, stage in enumerate(chosen, 1):
      head = f"[{i}/{len(chosen)}] {stage.name}"
      commands = [shlex.join([sys.executable, "-m", *cmd]) for cmd in stage.commands]
      if (done := read_done(workdir, stage.name)) is not None:
        changed = done.get("commands") != commands
        note = (f" (its recorded commands differ from this config's: delete {done_path(workdir, stage.name)} "
                "to run it again)") if changed else ""
        print(f"{head}: finished earlier ({duration(done.get('seconds', 0))}), skipped{note}", file=log, flush=True)
        continue
      log_path = os.path.join(workdir, f"{stage.name}.log")
      os.makedirs(os.path.dirname(log_path), exist_ok=True)
      print(f"{head}: {', '.join(c[0].split('.')[-1] for c in stage.commands)} → "
            f"{', '.join(stage.workdirs)} (log: {log_path})", file=log, flush=True)
      card_current = False
      t0 = time.perf_counter()
      for argv in stage.commands:
        try:
          rc = runner([sys.executable, "-m", *argv], log_path)
        except Interrupted as e:
          e.stage = stage.name
          raise
        if rc != 0:
          raise UserError(f"stage {stage.name!r} {_describe_exit(rc)}: see {log_path} "
                          f"(last line: {last_line(log_path) or '(empty)'})")
      if (missing := stage.missing_output()) is not None:
        raise UserError(f"stage {stage.name!r} exited 0 but did not finish: {missing}; see {log_path}, "
                        "then run the same command again to resume it")
      seconds = time.perf_counter() - t0  # this run's: an interrupted earlier attempt is not counted
      stage_outputs.write_json(done_path(workdir, stage.name), {
          "stage": stage.name, "seconds": round(seconds, 1), "exit_code": 0, "commands": commands,
          "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")})
      ran.append(stage.name)
      print(f"{head}: done in {duration(seconds)}", file=log, flush=True)
      if card is not None:
        card(workdir, stages)
        card_current = True
  finally:
    if card is not None and not card_current:  # after a failure, an interruption or a no-op re-run too
      try:
        card(workdir, stages)
      except Exception as e:  # noqa: BLE001 — never hide the stage's own error behind the card's
        print(f"warning: report card not updated ({type(e).__name__}: {e})", file=log, flush=True)
  print(f"{what}: {len(ran)} of {len(chosen)} stages ran ({duration(time.perf_counter() - t_all)}); "
        f"report card {os.path.join(workdir, 'report.md')}", file=log, flush=True)
  return ran
