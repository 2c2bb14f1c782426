"""The python tool: run model-written code in a locked-down child process and return what it printed.

  py = PythonSandbox()                           # cpu_s=2, wall_s=5, memory_mb=256, max_output=2000
  py('print(sum(range(10)))')                    # '45'
  py('"strawberry".count("r")')                  # '3'  (a last bare expression is printed, as in a REPL)
  py('while True: pass')                         # 'Error: time limit (2 s of CPU)'
  py.run(code)                                   # a Result: text, reason, seconds, returncode

The model sees stdout and stderr together (tracebacks included), at most
`max_output` bytes, then "[output truncated ...]"; when a limit stops the code,
a last line says which ("Error: time limit (5 s)", "Error: memory limit
(256 MB)"). A call never raises and never outlives `wall_s` by more than the
clean-up: every process the code started is killed and its folder removed.

How each limit holds (the child's own steps are in `sandbox_child.py`):
  CPU time      RLIMIT_CPU (SIGXCPU, then SIGKILL a second later), per process
  wall time     this side kills the process group (and, under a uid of its own,
                every process of that uid) at `wall_s`
  memory        RLIMIT_AS, per process: a MemoryError, reported in one line
  processes     as root on Linux: the child runs under a fresh uid (and gid)
                with RLIMIT_NPROC = `max_procs`, so the count is this sandbox's
                alone; otherwise RLIMIT_NPROC would count all of the user's
                processes, so fork is refused by the audit hook instead
  files         RLIMIT_FSIZE per file, at most `max_files` opened for writing,
                the audit hook (reads: the folder and the stdlib; writes: the
                folder), and under a fresh uid the kernel's own permissions
  network       a new network namespace (no interface is up) where the kernel
                allows one, and the audit hook refuses every socket event
  output        read from the pipe up to `max_output` bytes, then the child is
                killed: the parent never buffers more than that plus one chunk

The fresh uid needs an interpreter whose standard library that uid can read:
the project's when it can (`python` on a readable path), otherwise the
system's python3 (a pyenv build under a 0700 /root is unreadable), otherwise
no uid change (`isolation` says which). Audit hooks are not a security
boundary on their own (CPython says so); the uid, namespace and limits are
what the kernel enforces.
"""
from __future__ import annotations

import codecs
import functools
import json
import math
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple, Optional

from lm.errors import UserError

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
FOLDER_PREFIX = "lm-sandbox-"
# Fresh uids/gids are drawn from here: far above any account a system hands out.
UID_RANGE = (1_600_000_000, 1_700_000_000)
_CHUNK = 65536


class Result(NamedTuple):
  text: str           # what the model sees
  reason: str         # "ok", "exit" (non-zero status), "time", "cpu", "memory", "output", "signal"
  seconds: float      # wall time of the call, clean-up included
  returncode: Optional[int]


class PythonSandbox:
  name = "python"

  def __init__(self, cpu_s: float = 2, wall_s: float = 5, memory_mb: int = 256, max_procs: int = 16,
               max_output: int = 2000, file_mb: int = 8, max_files: int = 64, python: Optional[str] = None,
               own_uid: Optional[bool] = None):
    """`python`: the interpreter (default: this one if a fresh uid can read its stdlib, else python3);
    `own_uid`: run under a fresh uid (default: when root on Linux); False keeps this process's uid."""
    if min(cpu_s, wall_s, max_procs, max_output, file_mb, max_files) <= 0 or memory_mb < 64:
      raise UserError(f"PythonSandbox: cpu_s={cpu_s}, wall_s={wall_s}, max_procs={max_procs}, "
                      f"max_output={max_output}, file_mb={file_mb}, max_files={max_files} must be positive "
                      f"and memory_mb={memory_mb} at least 64 (Python itself needs ~30 MB)")
    self.cpu_s = max(1, math.ceil(cpu_s))  # RLIMIT_CPU counts whole seconds
    self.wall_s = wall_s
    self.memory_mb = memory_mb
    self.max_procs = max_procs
    self.max_output = max_output
    self.file_mb = file_mb
    self.max_files = max_files
    self.python = python
    self.own_uid = (os.geteuid() == 0 and sys.platform.startswith("linux")) if own_uid is None else own_uid

  @property
  def isolation(self) -> str:
    """Which interpreter runs the code and whether under a fresh uid (found on first use, then cached)."""
    exe, fresh_uid = _interpreter(self.python, self.own_uid)
    return f"{exe}, {'a fresh uid per call' if fresh_uid else 'this uid, fork refused'}"

  def __call__(self, arguments: str) -> str:
    try:
      return self.run(arguments).text
    except Exception as e:  # a failure of the sandbox itself is still output, never an exception in the loop
      return f"Error: the python tool failed ({type(e).__name__}: {e})"

  def run(self, code: str) -> Result:
    if not isinstance(code, str):
      return Result(f"Error: code must be text, got {type(code).__name__}", "exit", 0.0, None)
    start = time.monotonic()
    exe, fresh_uid = _interpreter(self.python, self.own_uid)
    uid = random.SystemRandom().randrange(*UID_RANGE) if fresh_uid else None
    folder = os.path.realpath(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=_parent_folder(fresh_uid)))
    try:
      with open(os.path.join(folder, "main.py"), "w", encoding="utf-8") as f:
        f.write(code)
      if uid is not None:
        for path in (folder, os.path.join(folder, "main.py")):
          os.chown(path, uid, uid)
      settings = {"folder": folder, "uid": uid, "gid": uid, "cpu_s": self.cpu_s, "memory_mb": self.memory_mb,
                  "file_mb": self.file_mb, "max_files": self.max_files, "max_procs": self.max_procs}
      env = {"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
      proc = subprocess.Popen([exe, "-I", "-S", "-B", "-u", "-X", "utf8", CHILD, json.dumps(settings)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=folder, env=env, start_new_session=True)
      try:
        data, stopped = self._collect(proc, start)
      finally:
        _kill_everything(proc, uid)
    finally:
      _remove(folder)
    return self._result(data, stopped, proc.returncode, time.monotonic() - start)

  def _collect(self, proc: subprocess.Popen, start: float) -> tuple[bytes, str]:
    """Reads the merged output until the program ends, the output overflows or the wall time is up."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    poller = select.poll()  # unlike select(), fine with descriptors above 1024 in a big process
    poller.register(fd, select.POLLIN | select.POLLHUP)
    data = bytearray()
    eof = False
    while True:
      left = start + self.wall_s - time.monotonic()
      if left <= 0:
        return bytes(data), "time"
      if eof:  # every writer closed the pipe, but the program may still be running
        if _exited(proc):
          return bytes(data), "end"
        time.sleep(min(left, 0.01))
        continue
      if not poller.poll(min(left, 0.05) * 1000):
        if _exited(proc):  # it ended while a process it started holds the pipe: take what is there
          eof = not _read_into(data, fd, self.max_output)
          return bytes(data), "output" if len(data) > self.max_output else "end"
        continue
      eof = not _read_into(data, fd, self.max_output)
      if len(data) > self.max_output:
        return bytes(data), "output"

  def _result(self, data: bytes, stopped: str, returncode: Optional[int], seconds: float) -> Result:
    truncated = stopped == "output"
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(data[:self.max_output], final=not truncated)
    text = text.rstrip()
    if truncated:
      return Result(f"{text}\n[output truncated: more than {self.max_output} bytes]", "output", seconds, returncode)
    if stopped == "time":
      reason, note = "time", f"Error: time limit ({self.wall_s:g} s)"
    elif returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # it ended before our kill: RLIMIT_CPU's signals
      reason, note = "cpu", f"Error: time limit ({self.cpu_s} s of CPU)"
    elif returncode is not None and returncode < 0:
      reason, note = "signal", f"Error: the program was killed ({signal.Signals(-returncode).name})"
    elif returncode == 1 and text.endswith(f"Error: memory limit ({self.memory_mb} MB)"):
      reason, note = "memory", ""  # the child's own last line (sandbox_child.py)
    else:
      reason, note = ("ok" if returncode == 0 else "exit"), ""
    text = f"{text}\n{note}" if text and note else text or note
    return Result(text, reason, seconds, returncode)


def _read_into(data: bytearray, fd: int, limit: int) -> bool:
  """Appends what the pipe holds now, up to just past `limit`; False at end of file."""
  while len(data) <= limit:
    try:
      chunk = os.read(fd, _CHUNK)
    except BlockingIOError:
      return True
    if not chunk:
      return False
    data += chunk
  return True


def _exited(proc: subprocess.Popen) -> bool:
  """Whether the child has ended, without reaping it: until `_kill_everything` has signalled its
  process group, its pid (the group's id) must not be free for reuse."""
  try:
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
  except ChildProcessError:
    return True


@functools.lru_cache(maxsize=None)
def _interpreter(python: Optional[str], own_uid: bool) -> tuple[str, bool]:
  """(interpreter, whether it runs under a fresh uid): the first candidate whose stdlib a stranger can read."""
  candidates = [python] if python else [sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
  for exe in filter(None, candidates):
    paths = _sys_path(exe)
    if paths is not None and (not own_uid or all(_readable_by_anyone(p) for p in paths if os.path.exists(p))):
      return exe, own_uid
  return python or sys.executable, False


@functools.lru_cache(maxsize=None)
def _parent_folder(fresh_uid: bool) -> Optional[str]:
  """Where sandbox folders go: the temp dir, unless a fresh uid could not reach it (TMPDIR under a 0700 home)."""
  if fresh_uid and not _readable_by_anyone(tempfile.gettempdir()) and _readable_by_anyone("/tmp"):
    return "/tmp"
  return None


def _sys_path(exe: str) -> Optional[list[str]]:
  """The import path of `exe -I -S`, or None when it is no Python 3.8+ (audit hooks are 3.8+)."""
  probe = "import json, sys; print(json.dumps([sys.version_info >= (3, 8), sys.path]))"
  try:
    out = subprocess.run([exe, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    new_enough, paths = json.loads(out.stdout)
  except (OSError, ValueError, subprocess.TimeoutExpired):
    return None
  return paths if new_enough else None


def _readable_by_anyone(path: str) -> bool:
  """Whether a uid with no relation to the owner can reach `path` (every directory on the way searchable)."""
  path = os.path.realpath(path)
  parts = path.split(os.sep)
  for i in range(1, len(parts) + 1):
    mode = os.stat(os.sep.join(parts[:i]) or os.sep).st_mode
    need = stat.S_IXOTH if stat.S_ISDIR(mode) else 0
    if i == len(parts):
      need |= stat.S_IROTH
    if mode & need != need:
      return False
  return True


def _pids_of_uid(uid: int) -> list[int]:
  """Live (not zombie) processes whose real, effective, saved or filesystem uid is `uid`."""
  pids = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:  # it ended while we looked
      continue
    if not fields.get("State", "").strip().startswith("Z") and str(uid) in fields.get("Uid", "").split():
      pids.append(int(name))
  return pids


def _kill_everything(proc: subprocess.Popen, uid: Optional[int]) -> None:
  """Kills the child's process group and, under a fresh uid, every process of that uid (setsid escapes
  the group, never the uid); then reaps the child."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  if uid is not None and os.path.isdir("/proc"):
    for _ in range(200):  # a fork racing the kill survives one round, never many: NPROC bounds them
      pids = _pids_of_uid(uid)
      if not pids:
        break
      for pid in pids:
        try:
          os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
      time.sleep(0.005)
  try:
    proc.wait(timeout=5)
  except subprocess.TimeoutExpired:  # stuck in the kernel: give up rather than hang the sampling loop
    pass
  proc.stdout.close()


def _remove(folder: str) -> None:
  def retry(func, path, _):
    try:  # the code may have taken the write bit off its own folders
      os.chmod(os.path.dirname(path), 0o700)
      os.chmod(path, 0o700)
      func(path)
    except OSError:
      pass
  shutil.rmtree(folder, onerror=retry)
