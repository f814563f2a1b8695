"""Minibatches for SVI: in-memory tensors or a DataLoader, sharded for data-parallel fits."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from pyrobnn._tensors import as_tensor, check_pair, model_dtype
from pyrobnn.model import BayesianModel

__all__ = ["Batches", "prepare_targets"]


def prepare_targets(model: BayesianModel, output_shape: torch.Size, y: torch.Tensor) -> torch.Tensor:
    """Check y against the network's output shape and the likelihood; return it ready to observe."""
    y = model.likelihood.prepare_y(output_shape, y)
    model.likelihood.check_values(y, output_shape)
    return y


class Batches:
    """Minibatches over in-memory tensors or a DataLoader, endlessly, epoch after epoch.

    In-memory data is reshuffled once per epoch with its own generator (one
    ``randperm`` per epoch, none per step); ``batch_size=None`` means full batch.

    With ``shard=(rank, world_size)`` (data-parallel fitting) each process sees
    its own part of every epoch through a ``DistributedSampler``: in-memory data
    are split by one built here (``batch_size`` is then per process, and
    ``None`` means the whole shard), a DataLoader must carry its own. ``size``
    stays the full dataset size N, which scales each process's likelihood.
    """

    def __init__(
        self,
        data: Any,
        model: BayesianModel,
        *,
        batch_size: int | None,
        device: torch.device,
        seed: int,
        shard: tuple[int, int] | None = None,
    ) -> None:
        dtype = model_dtype(model)
        self.device = device
        self.dtype = dtype
        self.model = model
        self.sampler: DistributedSampler[Any] | None = None
        if isinstance(data, DataLoader):
            if batch_size is not None:
                raise ValueError("batch_size is set by the DataLoader; leave batch_size=None when passing one.")
            self.loader: DataLoader[Any] | None = data
            try:
                self.size = len(data.dataset)  # type: ignore[arg-type]
            except TypeError as err:
                raise TypeError("the DataLoader's dataset must have a length (the dataset size N)") from err
            if self.size == 0 or len(data) == 0:
                raise ValueError("the DataLoader yields no batches (its dataset is empty): there is nothing to fit.")
            if shard is not None:
                if not isinstance(data.sampler, DistributedSampler):
                    raise ValueError(
                        "distributed=True with a DataLoader needs a DistributedSampler, so that each process "
                        "fits its own part of the data: DataLoader(dataset, batch_size=..., "
                        "sampler=torch.utils.data.distributed.DistributedSampler(dataset)). "
                        f"This one has a {type(data.sampler).__name__}."
                    )
                self.sampler = data.sampler
            self.steps_per_epoch = len(data)
            self.x = self.y = None
            self.output_shape: torch.Size | None = None
        else:
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise TypeError(
                    "data must be a pair (x, y) of tensors or arrays, or a torch DataLoader "
                    f"yielding (x, y) batches; got {type(data).__name__}"
                )
            x = as_tensor(data[0], "x", dtype=dtype, device=device)
            y = as_tensor(data[1], "y", dtype=dtype, device=device)
            check_pair(x, y)
            self.output_shape = model.output_shape(x)
            self.x, self.y = x, prepare_targets(model, self.output_shape, y)
            self.loader = None
            self.size = len(x)
            if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
                raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
            per_process = self.size
            if shard is not None:
                rank, world_size = shard
                # drop_last=False pads the last shard with repeated rows, so that every
                # process takes the same number of steps per epoch (DDP runs in lockstep).
                self.sampler = DistributedSampler(
                    TensorDataset(x), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
                )
                per_process = self.sampler.num_samples
            self.batch_size = per_process if batch_size is None else min(batch_size, per_process)
            self.steps_per_epoch = math.ceil(per_process / self.batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)  # a new split of the data for each epoch
            if self.loader is not None:
                for batch in self.loader:
                    yield self.prepare(batch)
            elif self.x is None or self.y is None:
                raise RuntimeError("Batches holds neither a DataLoader nor tensors")  # unreachable
            elif self.sampler is not None:
                order = torch.tensor(list(self.sampler), dtype=torch.long, device=self.device)
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    yield self.x[idx], self.y[idx]
            elif self.batch_size == self.size:
                yield self.x, self.y
            else:
                perm = torch.randperm(self.size, generator=self.generator).to(self.device)
                for start in range(0, self.size, self.batch_size):
                    idx = perm[start : start + self.batch_size]
                    yield self.x[idx], self.y[idx]
            epoch += 1

    def all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole data as one ``(x, y)`` pair: the tensors, or one pass over the DataLoader joined."""
        if self.x is not None and self.y is not None:
            return self.x, self.y
        assert self.loader is not None
        pairs = [self.prepare(batch) for batch in self.loader]
        return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])

    def prepare(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``(x, y)`` batch checked and converted as the data were (dtype, device, targets)."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            got = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            raise TypeError(f"a batch must be an (x, y) pair (a DataLoader must yield such pairs); got {got}")
        x = as_tensor(batch[0], "x", dtype=self.dtype, device=self.device)
        y = as_tensor(batch[1], "y", dtype=self.dtype, device=self.device)
        check_pair(x, y)
        if self.output_shape is None:
            self.output_shape = self.model.output_shape(x)
        return x, prepare_targets(self.model, self.output_shape, y)
