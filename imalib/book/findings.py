"""Checks that guard the book's findings: a sentence a person wrote, and the condition on the records it rests on.

A chapter states a finding in its prose, with the numbers glued from the
records, and puts beside it a hidden cell that calls :func:`check` with the
condition the sentence asserts (an ordering, a gap larger than the test set's
resolution, a value within the seed spread, ...). When the records change so
that the condition no longer holds, executing the chapter raises
:class:`FindingNotSupported`, and the book build fails instead of printing a
sentence its data contradict.

Nothing here writes prose: the sentence stays in the chapter, where a person
wrote it; the check names it by a short quotation so the failure says which
sentence to revisit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class FindingNotSupported(AssertionError):
    """A sentence of the book states a finding that the records no longer support."""


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def check(condition: bool, claim: str, **numbers: object) -> None:
    """Raise :class:`FindingNotSupported` unless ``condition`` holds.

    ``claim`` quotes the sentence the check guards; ``numbers`` are the values
    the condition was computed from, printed in the error so a reader sees at
    once what changed.
    """
    if not isinstance(condition, bool):
        condition = bool(condition)  # numpy booleans
    if condition:
        return
    shown = ", ".join(f"{name}={_show(value)}" for name, value in numbers.items())
    raise FindingNotSupported(
        f"the book says {claim!r}, but the records give {shown or 'no support'}: "
        f"re-read the sentence against the records, or re-check the runs"
    )


def standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` test samples."""
    if n <= 0:
        raise ValueError(f"n={n}: a standard error needs at least one test sample")
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n)


def resolved(a: float, b: float, n: int, k: float = 2.0) -> bool:
    """True when a and b (two accuracies on ``n`` samples each) differ by more than ``k`` standard errors."""
    spread = math.sqrt(standard_error(a, n) ** 2 + standard_error(b, n) ** 2)
    return abs(a - b) > k * spread


def resolved_over_seeds(
    a: float,
    b: float,
    n: int,
    *,
    sd_a: float = math.nan,
    seeds_a: int = 1,
    sd_b: float = math.nan,
    seeds_b: int = 1,
    k: float = 2.0,
) -> bool:
    """:func:`resolved` for two means over training seeds on the same ``n`` test samples.

    ``a`` and ``b`` must differ by more than ``k`` binomial standard errors (the test sample) and, where both
    were measured on two or more seeds, also by more than ``k`` standard errors of the difference of the
    seed means, sqrt(sd_a^2 / seeds_a + sd_b^2 / seeds_b) (the training runs). With one seed on either side
    the seed spread is unknown and only the binomial test applies.
    """
    if not resolved(a, b, n, k):
        return False
    if seeds_a < 2 or seeds_b < 2 or math.isnan(sd_a) or math.isnan(sd_b):
        return True
    return abs(a - b) > k * math.sqrt(sd_a**2 / seeds_a + sd_b**2 / seeds_b)


def seed_words(counts: Mapping[str, int], *, code: bool = False) -> str:
    """How many training seeds the rows of a table have, in words: '3 training seeds for ima, mma; 1 training
    seed for ce', or '3 training seeds per row' when every row has the same; ``code``: labels as `code`."""
    groups: dict[int, list[str]] = {}
    for label, count in counts.items():
        groups.setdefault(int(count), []).append(f"`{label}`" if code else str(label))

    def seeds(count: int) -> str:
        return f"{count} training seed{'s' if count > 1 else ''}"

    if len(groups) == 1:
        (count,) = groups
        return f"{seeds(count)} per row"
    return "; ".join(
        f"{seeds(count)} for {', '.join(labels)}" for count, labels in sorted(groups.items(), reverse=True)
    )


def ranking(values: Mapping[str, float]) -> list[str]:
    """Labels from the highest value to the lowest (ties keep the mapping's order)."""
    return sorted(values, key=lambda label: -values[label])


def ranked_first(values: Mapping[str, float], label: str) -> bool:
    """True when ``label`` has the highest value (ties count as first)."""
    return values[label] >= max(values.values())


def within(values: Sequence[float], lower: float, upper: float) -> bool:
    """True when every value lies in [lower, upper]."""
    return all(lower <= v <= upper for v in values)
