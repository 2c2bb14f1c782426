"""Verifiable tasks: prompts with a reference answer and a reward (SFT data now, GRPO and eval later).

  from lm import tasks
  task = tasks.get("world", world="runs/data/crawl/world.json")  # or world=None, seed=0: the seeded world
  task = tasks.get("arithmetic", add_digits=(2, 3))              # other keywords go to the task's constructor
  examples = task.examples("train", n=500, seed=0)
  score = task.reward(completion_text, examples[0])              # 1.0 or 0.0

Tasks (`NAMES`, a live view of the registry): "world" (facts of the synthetic
world, `world.py`), "arithmetic" (`arithmetic.py`), "spelling"
(`spelling.py`), "gsm8k" (grade-school word problems from GSM8K's JSONL,
`gsm8k.py`; `path=` names the file). `get` takes the same `world`/`seed` for
every task so callers can loop over names; tasks that do not ask about the
world ignore them. A new
task registers itself with `register(name, factory, uses_world=...)`;
`Example` and the `Task` protocol are in `base.py`.
"""
from __future__ import annotations

from typing import Callable

from lm.errors import UserError
from lm.tasks.base import SPLITS, Example, Task

_FACTORIES: dict[str, tuple[Callable[..., Task], bool]] = {}
NAMES = _FACTORIES.keys()


def register(name: str, factory: Callable[..., Task], uses_world: bool = False) -> None:
  """`factory(**options)`, or `factory(world=..., seed=..., **options)` when `uses_world`."""
  _FACTORIES[name] = (factory, uses_world)


def get(name: str, world=None, seed: int = 0, **options) -> Task:
  """The task `name`; `world` is a `synthetic.World`, a world.json path, or None for the world of `seed`."""
  if name not in _FACTORIES:
    raise UserError(f"unknown task {name!r}; known tasks: {', '.join(NAMES)}")
  factory, uses_world = _FACTORIES[name]
  return factory(world=world, seed=seed, **options) if uses_world else factory(**options)


def from_config(names, options, world=None, seed: int = 0, exposures: str | None = None) -> dict[str, Task]:
  """The named tasks, built once, with their options from a config block (`configs/base.task_options`:
  one sub-block per task; comma-separated strings become tuples)."""
  out = {}
  for name in sorted(set(names)):
    if name not in _FACTORIES:
      raise UserError(f"unknown task {name!r}; known tasks: {', '.join(NAMES)}")
    opts = dict(options[name]) if options is not None and name in options else {}
    opts = {k: tuple(x for x in v.split(",") if x) if isinstance(v, str) and k in ("ops", "kinds") else
            tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    if name == "world":
      opts["exposures"] = exposures or None
    out[name] = get(name, world=world, seed=seed, **opts)
  return out


def _builtin() -> None:
  from lm.tasks import arithmetic, gsm8k, spelling, world
  register(world.NAME, world.WorldTask, uses_world=True)
  register(arithmetic.NAME, arithmetic.ArithmeticTask)
  register(spelling.NAME, spelling.SpellingTask)
  register(gsm8k.NAME, gsm8k.GSM8KTask)


_builtin()

__all__ = ["NAMES", "SPLITS", "Example", "Task", "from_config", "get", "register"]
