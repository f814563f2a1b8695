"""The :class:`Dataset` every loader returns, and the two tasks it can have."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TASKS", "Dataset"]

#: The two tasks a dataset can have.
TASKS = ("regression", "classification")


@dataclass(frozen=True)
class Dataset:
    """A train/test split: ``task`` is ``"regression"`` or ``"classification"``.

    Regression targets are real tensors of shape ``(n,)``; class labels are
    ``long`` tensors with values ``0 … num_classes − 1``, and ``classes`` (when
    known) names the label each integer stands for.
    """

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    description: str
    classes: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int | None:
        if self.task != "classification":
            return None
        if self.classes is not None:
            return len(self.classes)
        return int(max(self.y_train.max(), self.y_test.max())) + 1
