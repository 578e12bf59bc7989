"""AutoAttack (Croce & Hein, 2020) beside the paper's PGD: an independent check of robust accuracy.

This module calls the ``pyautoattack`` package (the MIT-licensed packaging of
https://github.com/fra31/auto-attack); it re-implements none of its attacks.
What it adds is what the package leaves to its caller:

- the attack set per number of classes: APGD-CE + APGD-T (targeted, DLR loss)
  for four or more classes; APGD-CE + FAB for two or three, since the package's
  targeted DLR loss reads the fourth-largest logit (``custom_attacks``);
- inputs outside [0, 1]: the package clamps every iterate to the unit box, so
  a dataset with another box, or none (Moons), is attacked through an exact
  affine change of variables that keeps every eps-ball inside the unit box
  (``_UnitBox``); the threat model is unchanged;
- one restart per APGD attack in the custom version (the package's default of
  five is meant for its ``standard`` version) and a seed per noise level, with
  the global random stream saved and restored around each call;
- APGD's random start drawn per image (``per_image_starts``): the package draws
  one tensor for the whole batch it attacks, so an image's start depends on
  which other images share its batch; seeded by the image's own bytes (in the
  attack's unit-box coordinates), an image gets the same start whether
  AutoAttack attacks the whole test set or only the images PGD left robust
  (the cascade). For unbounded inputs (Moons) the box is fitted to the ``x``
  passed in, so this holds within one call, not between calls on other sets;
- the per-sample outcome at every noise level as a ``RobustnessResult``, the
  type the paper's protocol returns, so the two can be combined per image
  (``worst_case``), and the package's own pre-flight warnings kept.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.evaluate import RobustnessResult, predict
from imalib.norms import Clip, Norm, check_norm

Version = Literal["custom", "standard"]
_PACKAGE_NORM = {"linf": "Linf", "l2": "L2"}


def custom_attacks(num_classes: int) -> tuple[str, ...]:
    """The cheap AutoAttack set for a classifier with ``num_classes`` outputs."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least two classes")
    return ("apgd-ce", "apgd-t") if num_classes >= 4 else ("apgd-ce", "fab")


@dataclass(frozen=True)
class AutoAttackSettings:
    """What was run: enough to repeat it, stored in the run record beside the PGD protocol."""

    version: str
    attacks: tuple[str, ...]
    norm: str
    n_iter: int
    n_restarts: int
    n_target_classes: int
    seed: int
    package: str
    box: str
    warnings: tuple[str, ...] = field(default=())
    starts: str = "per-image"

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "attacks": list(self.attacks),
            "norm": self.norm,
            "n_iter": self.n_iter,
            "n_restarts": self.n_restarts,
            "n_target_classes": self.n_target_classes,
            "seed": self.seed,
            "package": self.package,
            "box": self.box,
            "warnings": list(self.warnings),
            "starts": self.starts,
        }


@dataclass(frozen=True)
class AutoAttackResult:
    """The per-sample outcome, what was run, the wall time and the number of images attacked per eps level.

    Both are 0 for eps 0, where no attack runs.
    """

    robustness: RobustnessResult
    settings: AutoAttackSettings
    level_seconds: tuple[float, ...] = ()
    adversarial: tuple[Tensor | None, ...] = ()  # per eps level, with keep_adversarial: the attacked inputs
    attacked: tuple[int, ...] = ()


class _UnitBox(nn.Module):
    """``model`` seen through x = low + scale * u, so that the attack works on u in [0, 1]^d.

    A uniform scale maps an L-inf or L2 ball of radius eps around x to a ball of
    radius eps / scale around u, so the threat model is the same; the low end and
    the scale are chosen so that every ball lies inside the unit box (unbounded
    inputs) or so that the unit box is the data's box (bounded inputs).
    """

    def __init__(self, model: nn.Module, low: float, scale: float) -> None:
        super().__init__()
        self.model = model
        self.low = low
        self.scale = scale

    def forward(self, u: Tensor) -> Tensor:
        return self.model(self.low + self.scale * u)


def _image_noise(x: Tensor, norm: str, seed: int, draws: dict[bytes, int]) -> Tensor:
    """APGD's start direction for each image of ``x``, from a generator seeded by the image's bytes and ``seed``.

    ``draws`` counts the directions already drawn per image (APGD-T draws one per target class), so the
    k-th start of an image is the same in any batch. Uniform in [-1, 1] per pixel for L-inf, Gaussian for
    L2: the package's own distributions, which its ``normalize`` then scales onto the eps-sphere.
    """
    rows = []
    flat = x.detach().cpu().contiguous()
    for image in flat:
        key = hashlib.blake2b(image.numpy().tobytes(), digest_size=16, key=seed.to_bytes(8, "little")).digest()
        count = draws.get(key, 0)
        draws[key] = count + 1
        code = hashlib.blake2b(key + count.to_bytes(4, "little"), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(code, "little") & (2**63 - 1))
        if norm == "Linf":
            rows.append(2 * torch.rand(image.shape, generator=generator, dtype=image.dtype) - 1)
        else:
            rows.append(torch.randn(image.shape, generator=generator, dtype=image.dtype))
    return torch.stack(rows).to(x.device)


def _seed_per_image(attack: object, seed: int) -> None:
    """Make ``attack`` (one of the package's APGD attacks) start every image from :func:`_image_noise`.

    The package's ``attack_single_run`` takes an explicit start ``x_init``; the wrapper passes one built
    exactly as the package builds its own (x + eps * normalize(t), then the package's clamp to the box).
    """
    original = attack.attack_single_run  # type: ignore[attr-defined]
    draws: dict[bytes, int] = {}

    def seeded(x: Tensor, y: Tensor, x_init: Tensor | None = None) -> object:
        if x_init is None:
            if x.dim() < attack.ndims:  # type: ignore[attr-defined]  # the package's own single-image case
                x, y = x.unsqueeze(0), y.unsqueeze(0)
            t = _image_noise(x, attack.norm, seed, draws)  # type: ignore[attr-defined]
            x_init = x + attack.eps * attack.normalize(t)  # type: ignore[attr-defined]
        return original(x, y, x_init=x_init)

    attack.attack_single_run = seeded  # type: ignore[attr-defined]


def _box(x: Tensor, clip: Clip, eps_max: float) -> tuple[float, float, str]:
    if clip is not None:
        low, high = float(clip[0]), float(clip[1])
        if not high > low:
            raise ValueError(f"clip={clip!r} must be (low, high) with high > low")
        return low, high - low, f"data box [{low:g}, {high:g}]"
    # Unbounded inputs: a box that holds every eps-ball (an L2 ball of radius eps lies in the L-inf ball
    # of the same radius), with room to spare so that the package's clamp never binds.
    low = float(x.min()) - 1.5 * eps_max
    high = float(x.max()) + 1.5 * eps_max
    return low, high - low, f"unbounded inputs mapped to the unit box (low {low:.4g}, scale {high - low:.4g})"


def evaluate_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    eps_list: Sequence[float],
    clip: Clip,
    num_classes: int,
    version: Version = "custom",
    attacks: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 500,
    progress: bool = False,
    keep_adversarial: bool = False,
    candidates: Tensor | None = None,
    per_image_starts: bool = True,
) -> AutoAttackResult:
    """Per-sample robustness under AutoAttack at each noise level (eps 0: clean accuracy).

    ``version="custom"`` runs ``attacks`` (default ``custom_attacks(num_classes)``)
    with one restart each; ``version="standard"`` runs the package's standard set
    (APGD-CE, APGD-T, FAB-T, Square) as RobustBench does. A sample counts as
    robust at eps only if it is classified correctly on clean data and no attack
    finds an adversarial example within eps. ``keep_adversarial`` also returns,
    per eps level, the inputs as the attack left them (``x`` where a sample was
    not attacked), in the data's own coordinates.

    ``candidates`` ([eps, images], bool) limits the attack at each level to the
    images it marks (the cascade: those another attack left robust); an image
    not marked counts as not robust, so the result is then the worst of that
    attack and this one per image.

    ``per_image_starts`` (default) draws APGD's random start per image from
    the image itself (see :func:`_image_noise`), so that the outcome of an
    image does not depend on the other images attacked with it; False keeps
    the package's draw for the whole batch (the records written before this
    option). FAB with one restart starts without noise; the standard
    version's Square attack keeps the package's own random stream.
    """
    from pyautoattack import AutoAttack

    norm = check_norm(norm)
    if list(eps_list) != sorted(eps_list):
        raise ValueError(f"eps_list={list(eps_list)} must be in increasing order")
    if version not in ("custom", "standard"):
        raise ValueError(f"version={version!r}: use 'custom' or 'standard'")
    if version == "standard" and attacks is not None:
        raise ValueError("attacks= goes with version='custom'; the standard version fixes its own set")
    if version == "standard" and num_classes < 4:
        raise ValueError(
            f"version='standard' needs 4+ classes (its targeted DLR loss); this model has "
            f"{num_classes}: use version='custom' (APGD-CE + FAB)"
        )
    chosen = tuple(attacks) if attacks is not None else custom_attacks(num_classes)
    needs = {"apgd-dlr": 3, "fab-t": 3, "apgd-t": 4}
    short = [a for a in chosen if num_classes < needs.get(a, 2)]
    if short:
        raise ValueError(
            f"attacks {short} need {max(needs[a] for a in short)}+ classes (DLR or targeted "
            f"losses); this model has {num_classes}: use ('apgd-ce', 'fab')"
        )
    began = time.perf_counter()
    eps_max = max([float(e) for e in eps_list] + [0.0])
    low, scale, box = _box(x, clip, eps_max)
    clean = predict(model, x) == y
    robust = clean.unsqueeze(0).repeat(len(eps_list), 1)
    if candidates is not None:
        if tuple(candidates.shape) != tuple(robust.shape):
            raise ValueError(
                f"candidates has shape {tuple(candidates.shape)}; it must be [eps levels, images] = "
                f"{tuple(robust.shape)}"
            )
        robust &= candidates.to(robust.device).bool()
    targets = min(9, num_classes - 1)
    caught: list[str] = []
    used: tuple[str, ...] = chosen
    restarts = 1
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    wrapped = _UnitBox(model, low, scale)
    levels = [(k, float(e)) for k, e in enumerate(eps_list) if e > 0]
    bar = None
    level_seconds = [0.0] * len(eps_list)
    attacked = [0] * len(eps_list)
    adversarial: list[Tensor | None] = [None] * len(eps_list)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels), desc=f"AutoAttack {version} {norm}", unit="eps", leave=False)
    devices = [x.device.index or 0] if x.is_cuda else []
    with frozen_eval(model), torch.random.fork_rng(devices=devices), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for k, eps in levels:
            level_began = time.perf_counter()
            if bar is not None:
                bar.set_postfix_str(
                    f"eps {eps:g}: {'+'.join(chosen) if version == 'custom' else 'standard set'} "
                    f"on {int(robust[k].sum())} images"
                )
            alive = robust[k].nonzero().squeeze(1)
            attacked[k] = int(alive.numel())
            if alive.numel() == 0:
                if bar is not None:
                    bar.update(1)
                continue
            adversary = AutoAttack(
                wrapped,
                norm=_PACKAGE_NORM[norm],
                eps=eps / scale,
                seed=seed + k,
                version=version,
                attacks=None if version == "standard" else list(chosen),
                device=x.device,
            )
            adversary.verbose = False
            if version == "custom":
                adversary.apgd.n_restarts = restarts
                adversary.fab.n_restarts = restarts
                adversary.apgd_targeted.n_target_classes = targets
                adversary.fab.n_target_classes = targets
            if per_image_starts:
                _seed_per_image(adversary.apgd, seed + k)
                _seed_per_image(adversary.apgd_targeted, seed + k)
            used = tuple(adversary.attacks_to_run)
            u = (x[alive] - low) / scale
            adversary_inputs, y_adv = adversary.run_standard_evaluation(u, y[alive], batch_size=batch_size)
            robust[k, alive] = (y_adv == y[alive]).to(robust.device)
            if keep_adversarial:
                moved = x.detach().clone()
                moved[alive] = (low + scale * adversary_inputs).to(x.dtype)
                adversarial[k] = moved
            level_seconds[k] = time.perf_counter() - level_began
            if bar is not None:
                bar.update(1)
        caught = sorted({str(w.message) for w in seen})
    if bar is not None:
        bar.close()
    settings = AutoAttackSettings(
        version=version,
        attacks=used,
        norm=norm,
        n_iter=100,
        n_restarts=restarts if version == "custom" else 1,
        n_target_classes=targets if version == "custom" else 9,
        seed=seed,
        package=f"pyautoattack {importlib.metadata.version('pyautoattack')}",
        box=box,
        warnings=tuple(caught),
        starts="per-image" if per_image_starts else "package (one draw per batch)",
    )
    result = RobustnessResult(
        eps=tuple(float(e) for e in eps_list), robust=robust.cpu(), norm=norm, seconds=time.perf_counter() - began
    )
    return AutoAttackResult(
        robustness=result,
        settings=settings,
        level_seconds=tuple(level_seconds),
        adversarial=tuple(adversarial) if keep_adversarial else (),
        attacked=tuple(attacked),
    )


@dataclass(frozen=True)
class BrokenExamples:
    """Test images that PGD left robust and AutoAttack broke, with the adversarial inputs it found.

    One entry per example: ``eps`` (the noise level), ``index`` (in the
    attacked test set), ``y``, ``prediction`` (the model's class for the
    adversarial input), ``clean`` and ``adversarial`` (the inputs, in the data's
    own coordinates) and ``distance`` (their difference in the attack's norm).
    """

    eps: tuple[float, ...]
    index: Tensor
    y: Tensor
    prediction: Tensor
    clean: Tensor
    adversarial: Tensor
    distance: Tensor

    def to_dict(self) -> dict[str, object]:
        return {
            "eps": list(self.eps),
            "index": self.index,
            "y": self.y,
            "prediction": self.prediction,
            "clean": self.clean,
            "adversarial": self.adversarial,
            "distance": self.distance,
        }

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> BrokenExamples:
        return cls(
            eps=tuple(float(e) for e in values["eps"]),  # type: ignore[attr-defined]
            **{k: values[k] for k in ("index", "y", "prediction", "clean", "adversarial", "distance")},  # type: ignore[arg-type]
        )

    def __len__(self) -> int:
        return len(self.eps)


def broken_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    pgd_robust: Tensor,
    autoattack_robust: Tensor,
    *,
    norm: Norm,
    eps_list: Sequence[float],
    clip: Clip,
    num_classes: int,
    seed: int = 0,
    count: int = 2,
) -> BrokenExamples:
    """Up to ``count`` images per noise level that PGD called robust and AutoAttack broke, attacked again.

    ``pgd_robust`` and ``autoattack_robust`` are the per-image outcomes
    ([eps, images]) of the two attacks on ``x``. The first ``2 * count``
    candidates per level are attacked again with the custom set to recover an
    adversarial input (with per-image starts and a data box the second pass
    meets each image with the same start; an outcome measured with the
    package's starts, one draw per batch, or on unbounded inputs, whose box is
    fitted to the images attacked, may not repeat, so an image the second
    pass does not break is skipped); each kept input is
    checked: within ``eps`` in ``norm`` and misclassified. The cost is that of
    attacking a few images, a small part of the evaluation.
    """
    norm = check_norm(norm)
    if pgd_robust.shape != autoattack_robust.shape or pgd_robust.shape != (len(eps_list), x.shape[0]):
        raise ValueError(
            f"pgd_robust {tuple(pgd_robust.shape)} and autoattack_robust {tuple(autoattack_robust.shape)} must "
            f"both be [eps levels, images] = ({len(eps_list)}, {x.shape[0]})"
        )
    eps_kept: list[float] = []
    parts: dict[str, list[Tensor]] = {k: [] for k in ("index", "y", "prediction", "clean", "adversarial", "distance")}
    candidates = pgd_robust.cpu() & ~autoattack_robust.cpu()
    for k, eps in enumerate(eps_list):
        chosen = candidates[k].nonzero().squeeze(1)[: 2 * count]
        if eps <= 0 or chosen.numel() == 0:
            continue
        xs, ys = x[chosen.to(x.device)], y[chosen.to(y.device)]
        again = evaluate_autoattack(
            model, xs, ys, norm=norm, eps_list=[float(eps)], clip=clip, num_classes=num_classes,
            seed=seed + k, keep_adversarial=True,
        )  # fmt: skip
        x_adv = again.adversarial[0]
        assert x_adv is not None
        with frozen_eval(model), torch.no_grad():
            predicted = model(x_adv).argmax(dim=1)
        difference = (x_adv - xs).flatten(1)
        distance = difference.abs().amax(dim=1) if norm == "linf" else difference.norm(dim=1)
        broken = (~again.robustness.robust[0]).to(x.device) & (predicted != ys) & (distance <= eps * (1 + 1e-4))
        keep = broken.nonzero().squeeze(1)[:count]
        eps_kept += [float(eps)] * int(keep.numel())
        for name, values in (
            ("index", chosen.to(x.device)), ("y", ys), ("prediction", predicted), ("clean", xs),
            ("adversarial", x_adv), ("distance", distance),
        ):  # fmt: skip
            parts[name].append(values[keep].detach().cpu())
    shapes = {"clean": (0, *x.shape[1:]), "adversarial": (0, *x.shape[1:])}
    return BrokenExamples(
        eps=tuple(eps_kept),
        **{
            name: torch.cat(values) if values else torch.zeros(shapes.get(name, (0,)), dtype=_dtype(name, x))
            for name, values in parts.items()
        },
    )


def _dtype(name: str, x: Tensor) -> torch.dtype:
    return torch.long if name in ("index", "y", "prediction") else x.dtype


def worst_case(*results: RobustnessResult) -> RobustnessResult:
    """Per image and eps, robust only if robust under every result (the same images in the same order)."""
    if not results:
        raise ValueError("worst_case needs at least one result")
    first = results[0]
    for other in results[1:]:
        if other.eps != first.eps or other.robust.shape != first.robust.shape or other.norm != first.norm:
            raise ValueError(
                f"cannot combine results over different eps, images or norms: {first.eps} "
                f"{tuple(first.robust.shape)} {first.norm} vs {other.eps} "
                f"{tuple(other.robust.shape)} {other.norm}"
            )
    robust = first.robust.clone()
    for other in results[1:]:
        robust &= other.robust
    return RobustnessResult(eps=first.eps, robust=robust, norm=first.norm, seconds=sum(r.seconds for r in results))
