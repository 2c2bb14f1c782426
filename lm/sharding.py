"""Device mesh, logical-axis rules and the shardings every experiment uses.

The mesh has three axes, sized by `config.mesh` (one `-1` takes the devices
left over):
  data    pure data parallelism (parameters replicated)
  fsdp    data parallelism with parameters and optimizer state sharded (ZeRO-3)
  tensor  Megatron-style tensor parallelism over heads and MLP width
The model names its axes logically ('embed', 'heads', 'mlp', 'vocab', ...);
`config.sharding_rules` maps those names to mesh axes. Axis types are Auto:
the model steers GSPMD with `with_logical_constraint`, and `jax.make_mesh`
would otherwise make Explicit axes.

Multi-host: `initialize_distributed()` calls `jax.distributed.initialize()` when
the launcher says several processes take part; every process then builds the
same global mesh and feeds only its slice of the global batch
(`host_batch_to_global`); what every host needs whole (sampled tokens,
per-example outputs) comes back through `to_host`, and a batch built from it
on every host goes in through `same_batch_to_global`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from lm.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def initialize_distributed() -> None:
  """Join the other processes when launched as one of several.

  Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (what
  our loopback test and Slurm/GKE launchers set). TPU pods and Slurm jobs are
  also detected by JAX itself when LM_DISTRIBUTED=auto.
  """
  if jax.distributed.is_initialized():
    return
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
  elif os.environ.get("LM_DISTRIBUTED") == "auto":
    jax.distributed.initialize()


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Resolve the config's axis sizes; a -1 takes what is left."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise UserError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"config.mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise UserError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"{num_devices} available")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[Any] | None = None) -> Mesh:
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def rules(config) -> tuple[tuple[str, Any], ...]:
  """`config.sharding_rules` as the tuple of pairs Flax expects."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in config.sharding_rules)


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rule_pairs) -> Any:
  """Pytree of logical PartitionSpecs → pytree of NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rule_pairs)


def batch_axis_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data×fsdp, the rest replicated (any rank ≥ 1)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def host_batch_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Each process passes its own rows; the result is one global array per key."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh), v)
          for k, v in batch.items()}


def same_batch_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Every process passes the whole global batch, the same on all (rows built from gathered
  rollouts); each device takes its own rows of it."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh), v, v.shape)
          for k, v in batch.items()}


def to_host(tree: Any) -> Any:
  """Every leaf as a whole numpy array on every process. A batch-sharded output of a program run on
  a multi-host mesh (sampled tokens, per-example log-probs) has rows on other hosts, which
  np.asarray cannot read: those are gathered (a collective: every process must call it, in the
  same order). Single-process, it is np.asarray."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(lambda x: np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable
                      else np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def check_batch(global_batch: int, grad_accum: int, mesh: Mesh) -> None:
  """Per-microbatch rows must split evenly over the batch axes and the hosts."""
  if global_batch % grad_accum:
    raise UserError(f"config.train.batch_size={global_batch} is not divisible by "
                     f"config.train.grad_accum={grad_accum}")
  n = batch_axis_size(mesh)
  micro = global_batch // grad_accum
  if micro % n:
    raise UserError(f"config.train.batch_size: microbatch {micro} (batch_size/grad_accum) is not "
                     f"divisible by the data axes data×fsdp={n}")
  if global_batch % jax.process_count():
    raise UserError(f"config.train.batch_size={global_batch} is not divisible by "
                     f"{jax.process_count()} processes")


def check_model_fits(model_cfg, mesh: Mesh) -> None:
  """Sharded parameter dimensions must divide evenly by their mesh axes."""
  tensor, fsdp = mesh.shape["tensor"], mesh.shape["fsdp"]
  dims = {"n_heads": model_cfg.n_heads, "n_kv_heads": model_cfg.n_kv_heads, "d_ff": model_cfg.d_ff,
          "vocab_size": model_cfg.vocab_size}
  for key, size in dims.items():
    if size % tensor:
      raise UserError(f"config.mesh.tensor={tensor} does not divide config.model.{key}={size}")
  if model_cfg.d_model % fsdp:
    raise UserError(f"config.mesh.fsdp={fsdp} does not divide config.model.d_model={model_cfg.d_model}")
