"""Random white noise as an "adversarial" noise (Appendix B of the paper)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.norms import Clip


def _device_of(model: nn.Module, x: Tensor) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else x.device


def uniform_noise(shape: torch.Size, level: float, generator: torch.Generator) -> Tensor:
    """Noise u with every entry drawn independently and uniformly from [-level, level], on the CPU."""
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * level


def white_noise_error_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    level: float = 0.05,
    repeats: int = 1,
    clip: Clip = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
) -> float:
    """The share of noisy samples x + u, u uniform in [-level, level] per pixel, that ``model`` misclassifies.

    Appendix B of the paper: with uniform white noise at level 0.05, 2.75% of the
    noisy COVID-19 CT test samples fooled the "ce" model. The paper's text
    implies symmetric noise, which is what is drawn here; the authors' later
    code added one-sided noise in [0, level] instead. The noisy input is clamped
    to ``clip`` (None: no clamp). Every sample gets ``repeats`` independent draws
    and the rate counts all of them, misclassified clean samples included (so
    level 0 gives the clean error rate). ``x`` is float in the box, or uint8
    images that are scaled to [0, 1] as ArrayDataset does. The noise is drawn on
    the CPU from a generator seeded with ``seed``, so a given (seed, batch_size)
    gives the same draws on every device. The model runs in eval mode without
    gradients; its train/eval mode is restored afterwards.
    """
    if level < 0 or repeats < 1 or batch_size < 1:
        raise ValueError(
            f"need level >= 0, repeats >= 1 and batch_size >= 1, got level={level}, "
            f"repeats={repeats}, batch_size={batch_size}"
        )
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x has {x.shape[0]} samples and y has {y.shape[0]} labels: need the same, non-zero count")
    device = _device_of(model, x)
    generator = torch.Generator().manual_seed(seed)
    wrong = 0
    with frozen_eval(model), torch.no_grad():
        for _ in range(repeats):
            for start in range(0, x.shape[0], batch_size):
                batch = x[start : start + batch_size]
                batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch
                noisy = batch.cpu() + uniform_noise(batch.shape, level, generator)
                if clip is not None:
                    noisy = noisy.clamp(*clip)
                predicted = model(noisy.to(device)).argmax(dim=1)
                wrong += int((predicted.cpu() != y[start : start + batch_size].cpu()).sum())
    return wrong / (x.shape[0] * repeats)


def white_noise_rates(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    levels: tuple[float, ...],
    repeats: int,
    clip: Clip,
    seed: int = 0,
    batch_size: int = 500,
) -> tuple[list[float], list[float], float]:
    """Per level: the error rate over all noisy draws and the flip rate over the draws of clean-correct samples.

    Level ``k`` uses the draws of :func:`white_noise_error_rate` with ``seed * 1_000_003 + k`` and the same
    ``batch_size`` (one generator per level, so adding a level leaves the others' draws alone); the flip rate
    counts only the draws of samples the model classifies correctly without noise. Returns
    ``(error_rate, flip_rate, clean_error)``.
    """
    if not levels or any(level < 0 for level in levels):
        raise ValueError(f"levels={list(levels)}: give one or more noise levels >= 0")
    device = _device_of(model, x)
    with frozen_eval(model), torch.no_grad():
        clean = torch.cat(
            [
                model(x[s : s + batch_size].to(device)).argmax(dim=1).cpu() == y[s : s + batch_size].cpu()
                for s in range(0, x.shape[0], batch_size)
            ]
        )
    n_clean = int(clean.sum())
    errors, flips = [], []
    for k, level in enumerate(levels):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + k)
        wrong = flipped = 0
        with frozen_eval(model), torch.no_grad():
            for _ in range(repeats):
                for s in range(0, x.shape[0], batch_size):
                    batch = x[s : s + batch_size].cpu()
                    noisy = batch + uniform_noise(batch.shape, float(level), generator)
                    if clip is not None:
                        noisy = noisy.clamp(*clip)
                    miss = model(noisy.to(device)).argmax(dim=1).cpu() != y[s : s + batch_size].cpu()
                    wrong += int(miss.sum())
                    flipped += int((miss & clean[s : s + batch_size]).sum())
        errors.append(wrong / (x.shape[0] * repeats))
        flips.append(flipped / (n_clean * repeats) if n_clean else float("nan"))
    return errors, flips, 1.0 - n_clean / x.shape[0]
