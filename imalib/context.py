"""Context managers that keep attacks free of side effects on the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode and its parameters excluded from autograd.

    On exit the previous train/eval mode and every parameter's ``requires_grad``
    flag are restored, so an attack inside a training step neither changes the
    mode nor leaves gradients in ``p.grad``.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
