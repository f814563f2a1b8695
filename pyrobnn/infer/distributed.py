"""Data-parallel fitting on ``torch.distributed``: what ``pb.fit(..., distributed=True)`` uses.

One process per device (or per CPU worker) runs the same script. Each holds a
copy of the model and guide, fits its own part of every epoch, and the
gradients are averaged across processes by
:class:`~torch.nn.parallel.DistributedDataParallel` (DDP) before each
optimiser step, so all processes keep identical guide parameters.

Multi-GPU use, one process per GPU, launched with ``torchrun``::

    # fit_ddp.py, run as: torchrun --nproc_per_node=4 fit_ddp.py
    import os
    import torch
    import torch.distributed as dist
    import pyrobnn as pb

    dist.init_process_group("nccl")          # "gloo" for CPU processes
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(0.1))
    result = pb.fit(model, "meanfield", (x, y), epochs=50, batch_size=256,
                    device=f"cuda:{local_rank}", distributed=True, seed=0)
    if dist.get_rank() == 0:
        pb.save("fit.pt", result.posterior())
    dist.destroy_process_group()

Every process passes the *whole* dataset ``(x, y)`` (or a ``DataLoader`` with
a ``DistributedSampler``); pyrobnn splits it. ``batch_size`` is per process,
so an optimiser step sees ``world_size * batch_size`` observations.

Notes
-----
Each process's loss is an unbiased estimate of the full-data negative ELBO (its
likelihood is scaled by N/n with N the full dataset size), so the averaged
gradient is one too, with the variance of ``world_size`` times as many
particles and observations. With full-batch shards the processes together
cover every observation once per step, and the fit is that of a single process
with ``world_size * num_particles`` particles. Each process draws its particles
from its own stream (derived from ``seed`` and its rank); the parameters start
from rank 0's, broadcast when DDP wraps the ELBO. The history holds the
average of the processes' terms, the same on every rank, so a divergence stops
every process at the same step.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["mean_over_processes", "process_group", "rank_seed", "wrap"]


def process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; an error with the fix if there is none."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            "distributed=True needs torch.distributed, which this build of torch lacks; "
            "install a torch build with distributed support or fit without distributed=True."
        )
    if not dist.is_initialized():
        raise RuntimeError(
            "distributed=True needs an initialised process group. Launch the script with "
            "torchrun (or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and call "
            'torch.distributed.init_process_group("gloo") ("nccl" on GPUs) before pb.fit.'
        )
    return dist.get_rank(), dist.get_world_size()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for this process's particles: distinct per rank, reproducible from ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel; its parameters and buffers become rank 0's.

    Buffers (prior parameters, the twin's initial weights, a flow's
    permutations) never change during a fit, so where torch allows it
    (``forward_sync_buffers``, torch >= 2.13) they are broadcast once here and
    not before every step.
    """
    from torch.nn.parallel import DistributedDataParallel

    options: dict[str, object] = {}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    if device.type == "cuda":
        options["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(module, **options)  # type: ignore[arg-type]


def mean_over_processes(values: Sequence[float], device: torch.device) -> list[float]:
    """The average of ``values`` over all processes (same result on every rank)."""
    import torch.distributed as dist

    # NCCL reduces CUDA tensors only; gloo and the others take CPU tensors.
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=where)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()  # type: ignore[no-any-return]
