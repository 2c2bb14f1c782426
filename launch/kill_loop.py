"""Kill a tiny run at random moments, resume it each time, and check it ends bit-identical.

    python -m launch.kill_loop --stage=pretrain --kills=20 --seed=0 --workdir=runs/kill_loop
    python -m launch.kill_loop --stage=sft --kills=20 --seed=0 --workdir=runs/kill_loop
    python -m launch.kill_loop --stage=grpo --kills=20 --seed=0 --workdir=runs/kill_loop

A reference run goes uninterrupted; then the same command runs in another
workdir and is killed `--kills` times, at a moment drawn uniformly over the
reference's wall time (start-up, compilation, steps and asynchronous checkpoint
saves alike), with SIGKILL (3 in 4) or SIGTERM (which saves and exits 0). After
each kill the command is started again and resumes from whatever it left; after
the last kill it runs to the end. The final parameters and optimizer state must
equal the reference's bit for bit. A killed run that reaches its last step
before the kills are spent is compared and started afresh (an episode), so no
kill lands on a finished run. `<workdir>/kill_loop.md` tables every attempt.
Runs on CPU in minutes; not part of the test suite (a slow test runs 3 kills).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["--config.model.d_model=64", "--config.model.n_layers=2", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=2", "--config.model.d_ff=128", "--config.model.max_len=128"]
PRETRAIN = [*MODEL, "--config.train.seq_len=64", "--config.train.batch_size=8", "--config.train.steps=40",
            "--config.train.ckpt_every=4", "--config.train.eval_every=20", "--config.train.log_every=5",
            "--config.train.eval_batches=1", "--config.sample.max_new_tokens=4", "--config.opt.warmup_steps=5"]
SFT = ["--config.train.seq_len=128", "--config.train.batch_size=8", "--config.train.steps=30",
       "--config.train.ckpt_every=3", "--config.train.eval_every=15", "--config.train.log_every=5",
       "--config.train.eval_batches=1", "--config.opt.warmup_steps=2", "--config.eval.examples=2",
       "--config.eval.max_new_tokens=4", "--config.eval.tasks=arithmetic", "--config.data.examples_per_task=60",
       "--config.data.sources=arithmetic*1,spelling*1"]

GRPO = ["--config.rl.prompts_per_step=2", "--config.rl.group=4", "--config.train.batch_size=8",
        "--config.rl.max_new_tokens=16", "--config.train.seq_len=96", "--config.train.steps=12",
        "--config.train.ckpt_every=2", "--config.train.eval_every=6", "--config.eval.examples=2",
        "--config.eval.samples=2", "--config.eval.max_new_tokens=8", "--config.data.train_prompts=40",
        "--config.opt.lr=1e-3", "--config.opt.warmup_steps=1"]


def _env() -> dict:
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")


def _corpus(path: str) -> str:
  rng = np.random.default_rng(0)
  words = ["the", "king", "queen", "castle", "sword", "rides", "north", "to", "and", "of", "a", "river"]
  with open(path, "w") as f:
    f.write("\n\n".join(" ".join(rng.choice(words, 60)) + "." for _ in range(400)))
  return path


def command(stage: str, workdir: str, base: str | None, corpus: str) -> list[str]:
  if stage == "pretrain":
    return [sys.executable, "-m", "experiments.pretrain", "--config=configs/pretrain.py:tiny",
            f"--workdir={workdir}", *PRETRAIN, f"--config.data.path={corpus}"]
  if stage == "grpo":
    return [sys.executable, "-m", "experiments.grpo", "--config=configs/grpo.py:tiny", f"--workdir={workdir}",
            *GRPO, f"--config.init_from.workdir={base}"]
  return [sys.executable, "-m", "experiments.sft", "--config=configs/sft.py:tiny", f"--workdir={workdir}",
          *SFT, f"--config.init_from.workdir={base}"]


def _run(cmd: list[str]) -> tuple[int, float, str]:
  t = time.time()
  out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
  return out.returncode, time.time() - t, out.stdout + out.stderr


def final_state(workdir: str):
  import orbax.checkpoint as ocp
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(steps[-1]), "state"))
  return steps[-1], state


def identical(a, b) -> tuple[bool, int]:
  import jax
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb)), len(la)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.kill_loop", description=__doc__.split("\n\n")[0])
  p.add_argument("--stage", choices=("pretrain", "sft", "grpo"), default="pretrain")
  p.add_argument("--kills", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workdir", default="runs/kill_loop")
  a = p.parse_args(argv)
  rng = random.Random(a.seed)
  root = os.path.join(os.path.abspath(a.workdir), a.stage)
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  corpus = _corpus(os.path.join(root, "corpus.txt"))
  base = None
  if a.stage in ("sft", "grpo"):
    base = os.path.join(root, "base")
    code, _, log = _run(command("pretrain", base, None, corpus))
    if code:
      print(log[-3000:], file=sys.stderr)
      return 1
  reference, killed = os.path.join(root, "reference"), os.path.join(root, "killed")
  code, ref_s, log = _run(command(a.stage, reference, base, corpus))
  if code:
    print(log[-3000:], file=sys.stderr)
    return 1
  print(f"reference: {ref_s:.1f} s uninterrupted", flush=True)

  ref_step, ref_state = final_state(reference)
  rows, episodes, kills, resumes, attempt = [], [], 0, 0, 0
  cmd = command(a.stage, killed, base, corpus)
  # Episodes: the killed run goes from nothing to its last step; if it gets there before all the
  # kills are spent, it is compared and started afresh, so no kill lands on a finished run.
  while kills < a.kills or not episodes:
    shutil.rmtree(killed, ignore_errors=True)
    while True:
      attempt += 1
      delay = rng.uniform(1.0, ref_s) if kills < a.kills else None
      sig = signal.SIGKILL if rng.random() < 0.75 else signal.SIGTERM
      t = time.time()
      proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
      sent = None
      try:
        proc.wait(timeout=delay)
      except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        sent = sig.name
        kills += 1
      out, _ = proc.communicate()
      resumed = "resumed from" in out
      resumes += resumed
      step = out.split("resumed from ")[1].split()[0].rsplit("/", 1)[-1] if resumed else "0"
      rows.append({"episode": len(episodes) + 1, "attempt": attempt, "signal": sent or "-",
                   "after_s": round(time.time() - t, 1), "resumed_from": int(step), "exit": proc.returncode})
      print(json.dumps(rows[-1]), flush=True)
      if sent is None and proc.returncode != 0:
        print(out[-3000:], file=sys.stderr)
        return 1
      if sent is None or "already finished" in out:
        got_step, got_state = final_state(killed)
        same, leaves = identical(ref_state, got_state)
        episodes.append(same and got_step == ref_step)
        print(f"episode {len(episodes)}: final step {got_step}, bit-identical: {episodes[-1]}", flush=True)
        break
      if attempt > 4 * a.kills + 20:
        print("too many attempts", file=sys.stderr)
        return 1

  ok = all(episodes)
  summary = {"stage": a.stage, "kills": kills, "sigkill": sum(r["signal"] == "SIGKILL" for r in rows),
             "sigterm": sum(r["signal"] == "SIGTERM" for r in rows), "starts": attempt, "resumes": resumes,
             "episodes": len(episodes), "episodes_bit_identical": sum(episodes), "final_step": ref_step,
             "bit_identical": ok, "leaves_compared": leaves, "seed": a.seed}
  lines = [f"# Kill loop: {a.stage}", "", "| episode | attempt | signal | after (s) | resumed from step | exit |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {r['episode']} | {r['attempt']} | {r['signal']} | {r['after_s']} | {r['resumed_from']} | {r['exit']} |"
            for r in rows]
  lines += ["", "```json", json.dumps(summary, indent=2), "```", ""]
  with open(os.path.join(root, "kill_loop.md"), "w") as f:
    f.write("\n".join(lines))
  print(json.dumps(summary), flush=True)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
