"""The guards of the book's findings: a failed condition stops the chapter with the sentence and the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from imalib.book.findings import (
    FindingNotSupported,
    check,
    ranked_first,
    ranking,
    resolved,
    resolved_over_seeds,
    standard_error,
    within,
)


def test_check_passes_silently_and_fails_with_the_claim_and_numbers():
    check(0.84 - 0.64 > 0.1, "PGD overstates IMA by more than 0.1", gap=0.2)
    check(np.bool_(True), "numpy booleans count")
    with pytest.raises(FindingNotSupported, match=r"'IMA ranks first'.*pgd=0\.81.*exact=0\.7"):
        check(False, "IMA ranks first", pgd=0.81, exact=0.7)


def test_standard_error_and_resolution():
    assert standard_error(0.5, 300) == pytest.approx(0.02887, abs=1e-5)
    assert standard_error(1.0, 300) == 0.0
    assert not resolved(0.80, 0.76, 300) and resolved(0.80, 0.60, 300)
    with pytest.raises(ValueError, match="at least one"):
        standard_error(0.5, 0)


def test_ranking_helpers():
    values = {"ima": 0.64, "adv0.3": 0.83, "trades": 0.82}
    assert ranking(values) == ["adv0.3", "trades", "ima"]
    assert ranked_first(values, "adv0.3") and not ranked_first(values, "ima")
    assert within([0.1, 0.2], 0.0, 0.2) and not within([0.1, 0.3], 0.0, 0.2)


def test_resolution_over_seeds_also_needs_the_seed_means_apart():
    # 0.80 against 0.60 on 300 images is resolved by the binomial test alone ...
    assert resolved_over_seeds(0.80, 0.60, 300)
    # ... but not when the seeds scatter so much that the means are within two SE of their difference
    assert not resolved_over_seeds(0.80, 0.60, 300, sd_a=0.15, seeds_a=3, sd_b=0.15, seeds_b=3)
    # a tight seed spread keeps it resolved; one seed on a side: only the binomial test applies
    assert resolved_over_seeds(0.80, 0.60, 300, sd_a=0.01, seeds_a=3, sd_b=0.02, seeds_b=3)
    assert resolved_over_seeds(0.80, 0.60, 300, sd_a=0.15, seeds_a=3, sd_b=float("nan"), seeds_b=1)
    # and the seed spread never resolves what the test sample does not
    assert not resolved_over_seeds(0.80, 0.76, 300, sd_a=0.0, seeds_a=3, sd_b=0.0, seeds_b=3)
