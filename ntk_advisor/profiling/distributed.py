"""A profile split over processes with torch.distributed: ``torchrun --nproc-per-node P -m
ntk_advisor profile …`` (gloo on CPUs, nccl on GPUs).

How each part is split, and why (the choice is written into the profile's settings):

- **Probe-head features: by examples.** Each process embeds every P-th length-sorted batch;
  the features are gathered to every process, which fit the same logistic regression
  (deterministic), so all of them hold the same head.
- **Label gradient: by examples.** G = (1/M) Σ_n ∂(Ỹ_n·f_n)/∂W is a sum, so each process
  sums its batches and an all-reduce adds the P partial sums before the row, column and
  singular-value scores, which are not linear in G, are taken.
- **Kernels: by modules.** K_W[n, m] couples every pair of examples, so splitting examples
  would need every process's captures x and δ (N·T·(d_in + d_out) floats per module) to
  cross the wire, more than the kernels themselves (N² floats). Split by modules, each
  process repeats the forward and backward passes (cheap: ``plan`` counts 2-3 s of 57 s for
  minilm-l6 on vader-movie) and contracts only its own modules, about 1/P of the
  contractions; modules are dealt out by their contraction cost (largest first, to the
  least loaded process). Only the N×N kernels and d-sized scores are gathered to rank 0.

Rank 0 alone writes the profile folder; the others return after the gather. Each module's
kernel is computed by the same code on the same inputs as in one process, and the label
gradient differs only by the order of a float64 sum, so the folder matches a single
process's to rounding (tests/profiling/test_distributed.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist


def _collective(call, *args, **kwargs):
    """A collective whose failure (a process died or stopped) becomes one line, not a backend traceback."""
    try:
        return call(*args, **kwargs)
    except RuntimeError as exc:
        from ..errors import NtkAdvisorError

        raise NtkAdvisorError(f"another process of this torchrun group stopped ({str(exc).splitlines()[0][:160]}); "
                              "nothing was written: rerun every process") from None


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: torch.device) -> None:
    """Join the process group the launcher describes: nccl for CUDA devices, else gloo."""
    if launched() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def check_same_settings(settings: dict, examples, error: type[Exception]) -> None:
    """Every process must profile with rank 0's settings and data: a process started with
    other arguments would compute its share of another profile. The data is compared by
    content (a sha256 of ``examples``), the model by its folder's name, and the device not at
    all: paths may differ between machines, and place() writes each rank's own scratch copy."""
    if world() == 1:
        return
    import hashlib
    import json
    from pathlib import Path

    digest = hashlib.sha256(json.dumps(examples, default=str).encode()).hexdigest()
    mine = {key: value for key, value in settings.items() if key not in ("device", "data", "model")}
    mine |= {"data": digest, "model": Path(str(settings.get("model"))).name}
    theirs = gather_to_all(mine)
    for other, found in enumerate(theirs):
        if found != theirs[0]:
            keys = sorted(k for k in set(found) | set(theirs[0]) if found.get(k) != theirs[0].get(k))
            raise error(f"process {other} of {world()} was started with other settings than process 0 "
                        f"({', '.join(keys)}): start every process with the same arguments")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_device(name: str) -> str:
    """Under a launcher with GPUs, each process takes its local rank's GPU unless told one."""
    if launched() and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return name


def deal(costs: list[float], size: int) -> list[int]:
    """The process of each item: largest cost first, to the least loaded process (ties to the
    lower rank), so every process computes the same deal from the costs alone."""
    loads, owner = [0.0] * size, [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(size), key=lambda r: (loads[r], r))
        owner[index] = target
        loads[target] += costs[index]
    return owner


def my_share(items: list, costs: list[float] | None = None) -> list:
    """This process's items: every P-th, or, given costs, its part of `deal`."""
    size, me = world(), rank()
    if size == 1:
        return list(items)
    if costs is None:
        return items[me::size]
    return [item for item, owner in zip(items, deal(costs, size)) if owner == me]


def gather_to_all(part):
    """Every process's ``part`` (any picklable object), in rank order, on every process."""
    if world() == 1:
        return [part]
    parts = [None] * world()
    _collective(dist.all_gather_object, parts, part)
    return parts


def merge_on_rank0(part: Mapping) -> dict | None:
    """The union of every process's dict on rank 0 (tensors moved to the CPU first); None elsewhere."""
    if world() == 1:
        return dict(part)
    parts = [None] * world() if rank() == 0 else None
    _collective(dist.gather_object, dict(part), parts, dst=0)
    if rank() != 0:
        return None
    merged: dict = {}
    for piece in parts:
        merged.update(piece)
    return merged


def broadcast_from_rank0(value):
    """Rank 0's ``value`` (any picklable object) on every process."""
    if world() == 1:
        return value
    box = [value if rank() == 0 else None]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]


def sum_over_processes() -> Callable[[dict[str, torch.Tensor]], None] | None:
    """An in-place all-reduce (sum) of a dict of tensors, or None in one process."""
    if world() == 1:
        return None

    def reduce(tensors: dict[str, torch.Tensor]) -> None:
        for name in sorted(tensors):  # the same order on every process
            _collective(dist.all_reduce, tensors[name], op=dist.ReduceOp.SUM)

    return reduce


def finish() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
