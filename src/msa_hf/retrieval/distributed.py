"""The processes of an ``accelerate launch`` / ``torchrun`` job, as the index builder needs them.

One process is the plain case (rank 0 of 1, nothing to communicate). With ``WORLD_SIZE > 1``
in the environment, accelerate's ``PartialState`` joins the process group (NCCL on GPUs;
gloo on CPUs, with ``ACCELERATE_USE_CPU=1`` or on a machine without an accelerator) and
picks each process's device, so the same command runs unchanged on one CPU, one GPU or a
cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ProcessGroup", "process_group", "processes_use_cpu"]


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job, and the two collectives the index builder uses."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """``obj`` of the main process, on every process (any picklable object)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def processes_use_cpu() -> bool:
    """Whether a launcher's processes should join as CPU (gloo) processes.

    Accelerate only joins a CPU job when told to (``ACCELERATE_USE_CPU=1``, which ``accelerate
    launch --cpu`` sets but ``torchrun`` does not); with no accelerator there is no other choice.
    """
    from accelerate.utils import parse_flag_from_env

    has_accelerator = torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available())
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator


def process_group() -> ProcessGroup:
    """The current job's processes: one, or those a launcher started (``WORLD_SIZE`` > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessGroup()
    try:
        from accelerate import PartialState
    except ImportError as exc:
        raise ImportError(
            "Running msa-index under a multi-process launcher needs accelerate: pip install 'msa_hf[index]'."
        ) from exc
    state = PartialState(cpu=processes_use_cpu())
    if state.num_processes != int(os.environ["WORLD_SIZE"]):
        raise RuntimeError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but accelerate joined {state.num_processes} process(es) "
            f"({state.distributed_type}); check the launcher's settings."
        )
    return ProcessGroup(rank=state.process_index, world_size=state.num_processes, device=state.device)
