"""Orbax checkpoints: train state + Grain iterator state + config + tokenizer, together.

Layout: <workdir>/checkpoints/<step>/{state, data, config, tokenizer}. Orbax
writes each step into a temporary folder and renames it when complete, so a
run killed mid-save leaves the previous checkpoints intact, and `latest_step`
only ever sees finished ones. Restoring takes the abstract state with the
*current* run's shardings, so a checkpoint written on one mesh restores onto
another (Orbax reshards on read).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from lm import tokenizer as tokenizer_lib
from lm.errors import UserError


class SaveFailed(UserError):
  """A checkpoint could not be written (disk full, folder unwritable): one line, the run stops."""


def _one_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def preflight(directory: str, state_bytes: int) -> None:
  """Before training: the checkpoint folder is writable and its disk has room for two checkpoints
  (one being written while the last is kept). Seconds, not a timeout after the first save."""
  directory = os.path.abspath(directory)
  parent = directory
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  probe = os.path.join(directory if os.path.isdir(directory) else parent, f".write_probe_{os.getpid()}")
  try:
    with open(probe, "wb") as f:
      f.write(b"\0" * 4096)
    os.remove(probe)
  except OSError as e:
    raise SaveFailed(f"checkpoint folder {directory}: cannot write there ({e.strerror}); "
                     "choose another --workdir or fix its permissions") from None
  free = shutil.disk_usage(parent).free
  if free < 2 * state_bytes:
    raise SaveFailed(f"checkpoint folder {directory}: {free / 1e9:.2f} GB free, a checkpoint needs "
                     f"{state_bytes / 1e9:.2f} GB (two at a time while saving): free space or move --workdir")


def _tokenizer_record(tok) -> dict:
  """The tokenizer file's bytes, so every checkpoint can be decoded on its own."""
  import tempfile
  name = getattr(tok, "file_name", tokenizer_lib.TOKENIZER_FILE)
  with tempfile.TemporaryDirectory() as d:
    tok.save(os.path.join(d, name))
    with open(os.path.join(d, name), "rb") as f:
      data = f.read()
  return {"file_name": name, "vocab_size": int(tok.vocab_size), "data_b64": base64.b64encode(data).decode()}


def tokenizer_from_record(record: dict, dest_dir: str):
  os.makedirs(dest_dir, exist_ok=True)
  path = os.path.join(dest_dir, record["file_name"])
  with open(path, "wb") as f:
    f.write(base64.b64decode(record["data_b64"]))
  return tokenizer_lib.load_tokenizer(path)


class Checkpointer:
  """Save every N steps, keep the last K, resume from the newest finished step."""

  def __init__(self, directory: str, keep: int, every: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every = every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data", "config", "tokenizer"), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """Finished checkpoint steps, oldest first."""
    return sorted(self.manager.all_steps())

  def saved_processes(self, step: int) -> int | None:
    """How many processes wrote `step` (one data-iterator file each), None when it does not say."""
    for path in (epath.Path(self.directory) / str(step) / "data").glob("process_0-of-*.json"):
      if m := re.fullmatch(r"process_0-of-(\d+)\.json", path.name):
        return int(m.group(1))
    return None

  def check_errors(self) -> None:
    """Raise the failure of a finished background save now (called after every train step)."""
    try:
      self.manager.check_for_errors()
    except Exception as e:  # noqa: BLE001 - whatever the writer raised, the user sees one line
      raise SaveFailed(f"checkpoint save to {self.directory} failed: {_one_line(e)}") from e

  def save(self, step: int, state: Any, data_iter, config: ml_collections.ConfigDict, tok,
           force: bool = False) -> bool:
    if not force and step % self.every:
      return False
    self.check_errors()
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
        tokenizer=ocp.args.JsonSave(_tokenizer_record(tok)),
    )
    try:
      return self.manager.save(step, args=args, force=force)
    except OSError as e:
      raise SaveFailed(f"checkpoint save to {self.directory}/{step} failed: {e.strerror or e}") from e

  def restore(self, step: int, abstract_state: Any, data_iter) -> Any:
    """abstract_state: ShapeDtypeStructs carrying the target shardings."""
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iter),
    )
    out = self.manager.restore(step, args=args)
    return out.state

  def restore_meta(self, step: int) -> tuple[dict, dict]:
    """(config dict, tokenizer record) of a step, without touching the state."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), tokenizer=ocp.args.JsonRestore()))
    return out.config, out.tokenizer

  def restore_newest(self, abstract_state: Any, data_iter, log=print) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint that loads, or None when there is none. A checkpoint
    that fails to load (truncated, half-copied) is skipped with one line naming it; it is left on
    disk for the user to inspect."""
    for step in reversed(self.steps()):
      try:
        return step, self.restore(step, abstract_state, data_iter)
      except Exception as e:  # noqa: BLE001 - any failure to read a step means: try the one before
        log(f"warning: skipping checkpoint {self.directory}/{step}, it does not load ({_one_line(e)[:200]})")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self.check_errors()

  def close(self) -> None:
    self.wait()
    self.manager.close()


def abstract_with_shardings(state_abs: Any, state_sh: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state_abs, state_sh)
