"""Tools a model calls inside the sampling loop: calculator, sandboxed Python, BM25 search.

  from lm import tools
  calc = tools.get("calculator")                       # Calculator(): exact arithmetic via ast
  py = tools.get("python", cpu_s=2, wall_s=5)         # PythonSandbox(...): a locked-down child process
  search = tools.get("search", folder="runs/data/clean/jsonl", k=3)   # or no folder: the synthetic world
  output = py('print(sum(range(10)))')                 # '45'

Every tool has a `name` and `__call__(arguments: str) -> str`: the text the
rollout engine forces into the sequence between <|output_start|> and
<|output_end|> (encoded with `tok.encode`, so output that spells a special
token stays plain text). A tool never raises into the caller and never blocks
for long: a failure is output that starts with "Error: ", and every call is
bounded in time. Which tool a call's markers select is the engine's choice
(lm/conversation.py has markers for "python" and "search"; the calculator can
be served through the python markers). Construction is cheap; the search index
is built when the tool is made, so make it once and reuse it.
"""
from __future__ import annotations

import ast
from typing import Protocol

from lm.errors import UserError
from lm.tools.calculator import Calculator
from lm.tools.python_sandbox import PythonSandbox

NAMES = ("calculator", "python", "search")
_ARITHMETIC = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)


class Tool(Protocol):
  name: str

  def __call__(self, arguments: str) -> str: ...


def get(name: str, **options) -> Tool:
  """A new tool `name` made with `options` (the keyword arguments of its constructor; for "search",
  `folder=` selects `Search.from_folder`, otherwise `Search.from_world`)."""
  if name == "calculator":
    return Calculator(**options)
  if name == "python":
    return PythonSandbox(**options)
  if name == "search":
    from lm.tools.search import Search  # bm25s and the corpus readers load only when search is wanted
    folder = options.pop("folder", None)
    return Search.from_folder(folder, **options) if folder is not None else Search.from_world(**options)
  raise UserError(f"unknown tool {name!r}; known tools: {', '.join(NAMES)}")


class PythonCalls:
  """What runs a `<|python_start|>…<|python_end|>` call: a plain arithmetic expression goes to the
  calculator (exact, in-process, microseconds), anything else to the sandbox (a fresh process)."""

  name = "python"

  def __init__(self, calculator: Calculator | None = None, sandbox: PythonSandbox | None = None):
    self.calculator = calculator or Calculator()
    self.sandbox = sandbox or PythonSandbox()

  @staticmethod
  def is_arithmetic(code: str) -> bool:
    try:
      tree = ast.parse(code.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
      return False
    return all(isinstance(n, _ARITHMETIC) and not (isinstance(n, ast.Constant) and type(n.value) not in (int, float))
               for n in ast.walk(tree))

  def __call__(self, arguments: str) -> str:
    return (self.calculator if self.is_arithmetic(arguments) else self.sandbox)(arguments)


def search_options(tools_cfg, key: str = "config.tools") -> dict:
  """The search tool's options a run's `config.tools` block sets (configs/sft.py: search_snippet,
  search_chars), as `Search` keywords; a block from before they existed gets what runs had then."""
  from lm.tools.search import SNIPPETS
  get = tools_cfg.get if tools_cfg is not None else (lambda _, default: default)
  snippet, chars = get("search_snippet", "passage"), get("search_chars", 160)
  if snippet not in SNIPPETS:
    raise UserError(f"{key}.search_snippet={snippet!r}; use one of {', '.join(SNIPPETS)}")
  if not isinstance(chars, int) or chars < 20:
    raise UserError(f"{key}.search_chars={chars!r}; give the snippet's length in characters (at least 20)")
  return {"snippet": snippet, "snippet_chars": chars}


def trained_with(workdir: str) -> dict:
  """The `tools` block of the config a training run saved (<workdir>/config.json); {} when it has none."""
  import json
  import os
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return dict(json.load(f).get("tools") or {})
  except (OSError, ValueError, AttributeError) as e:
    raise UserError(f"{path}: not a run's config ({type(e).__name__}: {e})") from None


def for_conversation(use, search_folder: str | None = None, key: str = "tools", world_seed: int = 0,
                     **search_options) -> dict:
  """{conversation tool name: tool} for the rollout engine (the names of `lm.conversation.TOOLS`):
  "python" → `PythonCalls`, "search" → BM25 over `search_folder`, or over the good pages of the
  synthetic world of `world_seed` when None (default: one passage-sized hit; `search_options` are
  `Search` keywords, e.g. from `search_options(config.tools)`)."""
  out = {}
  for name in use:
    if name == "python":
      out[name] = PythonCalls()
    elif name == "search":
      from lm.tools.search import Search
      options = {"k": 1, "snippet_chars": 160, **search_options}
      out[name] = (Search.from_folder(search_folder, **options) if search_folder
                   else Search.from_world(seed=world_seed, **options))
    else:
      raise UserError(f"{key}: unknown tool {name!r}; the conversation format calls python, search")
  return out
