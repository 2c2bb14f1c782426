"""The first code a sandboxed Python process runs: it locks itself in, then runs the untrusted code.

Never imported; `python_sandbox.PythonSandbox` starts it as

  <python> -I -S -B -u -X utf8 sandbox_child.py '<settings as JSON>'

in a fresh temporary folder (the cwd) that holds `main.py`, the code to run.
It runs on whichever Python the sandbox picked (the project's, or the system's
when the project's is unreadable to an unprivileged user), so it uses the
standard library only and stays compatible with Python 3.8.

The order of the steps matters:
  1. resource limits (CPU seconds, address space, file size, open files, no
     core dumps; the process count only when running under its own uid);
  2. a new network namespace (as root; otherwise a user namespace with one),
     so no socket reaches anything, then no_new_privs;
  3. as root, drop to the sandbox's own uid/gid: from here the kernel refuses
     what that uid may not do, and RLIMIT_NPROC counts this sandbox only;
  4. an audit hook (it cannot be removed once added) that refuses reads
     outside the folder and Python's standard library, writes outside the
     folder, sockets, new programs, signals to other processes, and the
     modules that would get around it (ctypes, _posixsubprocess, pwd, ...);
  5. the code, as `__main__`; a last bare expression is printed like in a
     REPL, and a MemoryError prints a one-line "Error: memory limit".
"""
import json
import os
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
CODE_FILE = "main.py"
FILENAME = "<code>"

# Always refused: new programs (they would run without this hook), signals (as root they would reach
# any process), namespace and limit changes, and the gc/frame walks that could find the hook's state.
_REFUSED_EVENTS = frozenset((
    "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "pty.spawn", "os.startfile",
    "os.kill", "os.killpg", "signal.pthread_kill", "os.unshare", "os.setns", "os.symlink", "os.link",
    "resource.setrlimit", "resource.prlimit", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "sys._current_frames", "sqlite3.enable_load_extension", "ctypes.dlopen",
))
_FORK_EVENTS = frozenset(("os.fork", "os.forkpty"))
# Modules that call the C library behind the hook's back (ctypes, fork+exec, the password database).
_REFUSED_IMPORTS = frozenset((
    "ctypes", "_ctypes", "_posixsubprocess", "_posixshmem", "pwd", "grp", "spwd", "nis", "readline",
    "_tkinter", "_xxsubinterpreters", "_xxinterpchannels", "_testcapi", "_testinternalcapi",
))
# Events that change files: (indices of the path arguments).
_WRITE_EVENTS = {
    "os.remove": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.rmdir": (0,), "os.chmod": (0,),
    "os.chown": (0,), "os.utime": (0,), "os.truncate": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
    "os.chflags": (0,), "os.lchflags": (0,), "os.chdir": (0,), "sqlite3.connect": (0,), "dbm.open": (0,),
}
_READ_EVENTS = {"os.listdir": (0,), "os.scandir": (0,), "os.getxattr": (0,), "os.listxattr": (0,)}
_DEVICES_READ = ("/dev/null", "/dev/zero", "/dev/urandom")
_AF_UNIX = 1  # the same on Linux and macOS; importing socket here would slow every start


def _set_limits(s):
  import resource
  mb = 1024 * 1024
  limits = [
      (resource.RLIMIT_CPU, s["cpu_s"], s["cpu_s"] + 1),  # SIGXCPU at the soft limit, SIGKILL one second later
      (resource.RLIMIT_AS, s["memory_mb"] * mb, s["memory_mb"] * mb),
      (resource.RLIMIT_FSIZE, s["file_mb"] * mb, s["file_mb"] * mb),
      (resource.RLIMIT_CORE, 0, 0),
      (resource.RLIMIT_NOFILE, 64, 64),
  ]
  if s["uid"] is not None:  # under a uid of its own, NPROC counts this sandbox's processes and threads only
    limits.append((resource.RLIMIT_NPROC, s["max_procs"], s["max_procs"]))
  for which, soft, hard in limits:
    try:
      resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):  # macOS refuses some (RLIMIT_AS): the others still hold
      pass


def _isolate_network():
  """A network namespace with only a downed loopback; True when it worked."""
  ok = False
  try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:
      ok = libc.unshare(CLONE_NEWNET) == 0
    else:
      uid, gid = os.getuid(), os.getgid()
      if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        # Without a mapping, files could not be created (EOVERFLOW); map the uid and gid onto themselves.
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
          with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
        ok = True
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
  except (OSError, AttributeError, ImportError):  # not Linux, or no namespaces: the audit hook still refuses sockets
    pass
  finally:
    # Forget ctypes, so that importing it again goes through the audit hook (which refuses it).
    for name in [m for m in sys.modules if m in ("ctypes", "_ctypes") or m.startswith("ctypes.")]:
      del sys.modules[name]
  return ok


def _drop_privileges(s):
  if s["uid"] is not None:
    os.setgroups([])
    os.setgid(s["gid"])
    os.setuid(s["uid"])


def _disarm_subprocess():
  """`import subprocess` (and asyncio, which imports it) must work; starting a program must not.

  Popen raises an audit event the hook refuses, but `_posixsubprocess.fork_exec` raises none, so it
  is replaced before subprocess can import it; a fresh copy of the module is an import the hook refuses.
  """
  import _posixsubprocess

  def fork_exec(*args, **kwargs):
    raise PermissionError("sandbox: starting other programs is not allowed")
  _posixsubprocess.fork_exec = fork_exec


def _install_audit_hook(folder, read_roots, max_files, allow_fork):
  """Everything the hook needs is bound here, in a closure: user code cannot reach it to change it."""
  realpath, join, getcwd, fsdecode, fspath = os.path.realpath, os.path.join, os.getcwd, os.fsdecode, os.fspath
  sep = os.sep
  write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
  writable = (folder,)
  readable = tuple(read_roots) + (folder,)
  files_written = [0]

  def resolve(path):
    if path is None:
      path = "."
    if isinstance(path, int):  # a descriptor: it came from an open this hook allowed
      return None
    return realpath(join(getcwd(), fsdecode(fspath(path))))

  def inside(path, roots):
    return any(path == r or path.startswith(r.rstrip(sep) + sep) for r in roots)

  def refuse(what, error=PermissionError):
    raise error(f"sandbox: {what} is not allowed")

  def check_write(path, what):
    resolved = resolve(path)
    if resolved is not None and not inside(resolved, writable) and resolved != "/dev/null":
      refuse(f"{what} on {resolved} (only files in the current folder)")

  def hook(event, args):
    if event == "open":
      path, mode, flags = args
      resolved = resolve(path)
      if resolved is None:
        return
      if isinstance(flags, int) and flags & write_flags or mode and any(c in mode for c in "wax+"):
        if resolved == "/dev/null":
          return
        if not inside(resolved, writable):
          refuse(f"writing {resolved} (only files in the current folder)")
        files_written[0] += 1
        if files_written[0] > max_files:
          refuse(f"opening more than {max_files} files for writing")
      elif not inside(resolved, readable) and resolved not in _DEVICES_READ:
        refuse(f"reading {resolved} (only files in the current folder)")
    elif event in _WRITE_EVENTS:
      for i in _WRITE_EVENTS[event]:
        check_write(args[i] if i < len(args) else None, event)
    elif event in _READ_EVENTS:
      resolved = resolve(args[0] if args else None)
      if resolved is not None and not inside(resolved, readable):
        refuse(f"{event} on {resolved} (only the current folder)")
    elif event == "socket.__new__" and len(args) > 1 and args[1] == _AF_UNIX:
      return  # socketpair() (asyncio's self-pipe); connect and bind are still refused below
    elif event.startswith("socket."):
      refuse(f"the network ({event})")
    elif event in _REFUSED_EVENTS or (event in _FORK_EVENTS and not allow_fork):
      refuse(f"{event} (no other programs or processes)")
    elif event == "import" and args and args[0] in _REFUSED_IMPORTS:
      refuse(f"importing {args[0]}", ImportError)  # optional imports (tarfile's pwd) fall back

  sys.addaudithook(hook)


def _run(source, memory_mb):
  """Runs the code as __main__; returns the exit status."""
  import ast
  import builtins
  import linecache
  import traceback
  import types

  linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)  # source lines in tracebacks
  main = types.ModuleType("__main__")
  main.__builtins__ = builtins
  sys.modules["__main__"] = main
  try:
    tree = ast.parse(source, FILENAME)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
      last = compile(ast.Expression(tree.body.pop().value), FILENAME, "eval")
    body = compile(tree, FILENAME, "exec")
  except (SyntaxError, ValueError) as e:
    traceback.print_exception(type(e), e, None)
    return 1
  status, out_of_memory = 0, False
  try:
    exec(body, main.__dict__)
    if last is not None:
      value = eval(last, main.__dict__)
      if value is not None:
        print(repr(value))
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      status = e.code or 0
    else:
      print(e.code, file=sys.stderr)
      status = 1
  except MemoryError:
    out_of_memory = True
  except BaseException as e:  # the traceback as `python main.py` would print it, without this file's frames
    report = traceback.TracebackException(type(e), e, e.__traceback__)
    for part in _chain(report):
      part.stack = traceback.StackSummary.from_list([f for f in part.stack if f.filename != __file__])
    print("".join(report.format()), end="", file=sys.stderr)
    status = 1
  if out_of_memory:  # outside the except block, so the traceback's frames (and their memory) are gone
    main.__dict__.clear()
    print(f"Error: memory limit ({memory_mb} MB)", file=sys.stderr)
    status = 1
  return status


def _chain(report):
  """A TracebackException and the ones it was raised from or during (they print their own stacks)."""
  seen = []
  while report is not None and report not in seen:
    seen.append(report)
    report = report.__cause__ or report.__context__
  return seen


def main():
  settings = json.loads(sys.argv[1])
  folder = settings["folder"]
  _set_limits(settings)
  _isolate_network()
  _drop_privileges(settings)
  with open(os.path.join(folder, CODE_FILE), encoding="utf-8") as f:
    source = f.read()
  read_roots = [os.path.realpath(p) for p in sys.path if p]
  # What _run needs, imported up front: importing while reporting a MemoryError could fail for lack of memory.
  for name in ("ast", "linecache", "traceback", "types"):
    __import__(name)
  _disarm_subprocess()
  _install_audit_hook(folder, read_roots, settings["max_files"], settings["uid"] is not None)
  status = _run(source, settings["memory_mb"])
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # the code may have closed or replaced it
      pass
  # No interpreter shutdown: threads the code left running must not keep the sandbox alive.
  os._exit(status)


if __name__ == "__main__":
  main()
