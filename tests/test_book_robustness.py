"""The robustness chapter's tables from made-up records: means over seeds, rankings, overstatement, masking signs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from imalib.book.robustness import (
    attack_frame,
    chapter_values,
    format_table,
    masking_signs,
    measured,
    not_measured_command,
    overstated,
    rankings,
    resolution,
    robustness_table,
    seed_table,
)
from imalib.records import AutoAttackEntry, ResultRecord, read_record

BASE = read_record(next((Path(__file__).resolve().parents[1] / "results" / "fashion_mnist").glob("ima-linf-*"))
                   / "result.json")
EPS = (0.0, 0.1, 0.2)


def made_up(label: str, seed: int, pgd: tuple[float, ...], aa: tuple[float, ...] | None,
            both: tuple[float, ...] | None = None, n_test: int = 100) -> ResultRecord:
    entry = None
    if aa is not None:
        worst = both if both is not None else tuple(min(p, a) for p, a in zip(pgd, aa, strict=True))
        entry = AutoAttackEntry(eps=EPS, accuracy=aa, worst_of_both=worst, pgd_accuracy=pgd, n_images=n_test,
                                settings={"version": "custom"}, seconds=1.0, level_seconds=(0.0, 0.5, 0.5))
    return replace(BASE, label=label, seed=seed, n_test=n_test, eps=EPS, accuracy=pgd, envelope=pgd,
                   rises=(False,) * 3, autoattack=entry)


RECORDS = [
    made_up("ima", 0, (0.8, 0.6, 0.5), (0.8, 0.40, 0.20)),
    made_up("ima", 1, (0.8, 0.6, 0.5), (0.8, 0.44, 0.24)),
    made_up("mma", 0, (0.8, 0.5, 0.3), (0.8, 0.48, 0.29)),
    made_up("mma", 1, (0.8, 0.5, 0.3), (0.8, 0.48, 0.27)),
]


def test_resolution_is_two_standard_errors_and_at_least_one_image() -> None:
    assert resolution(0.5, 100) == pytest.approx(0.1)
    assert resolution(0.0, 100) == pytest.approx(0.01)


def test_table_means_and_sds_over_seeds() -> None:
    table = robustness_table(RECORDS, "fashion_mnist", "linf")
    assert list(dict.fromkeys(table["label"])) == ["ima", "mma"] and len(table) == 6
    row = table[(table["label"] == "ima") & (table["eps"] == 0.2)].iloc[0]
    assert row["n_seeds"] == 2 and row["pgd"] == pytest.approx(0.5) and row["pgd_sd"] == pytest.approx(0.0)
    assert row["autoattack"] == pytest.approx(0.22) and row["autoattack_sd"] == pytest.approx(math.sqrt(0.0008))
    assert row["worst_of_both"] == pytest.approx(0.22)
    shown = format_table(table)
    assert shown.loc["ima", ("0.2", "autoattack")] == "0.220 ± 0.028"
    assert shown.loc["mma", ("0.1", "pgd")] == "0.500 ± 0.000"
    with pytest.raises(ValueError, match="no records for svhn/linf"):
        robustness_table(RECORDS, "svhn", "linf")


def test_rankings_change_under_the_worst_of_both() -> None:
    frame = rankings(RECORDS, "fashion_mnist", "linf").set_index("eps")
    assert frame.loc[0.2, "pgd"] == "ima > mma" and frame.loc[0.2, "worst_of_both"] == "mma > ima"
    assert bool(frame.loc[0.2, "changed"]) and bool(frame.loc[0.1, "changed"])


def test_overstatement_beyond_the_resolution_only() -> None:
    frame = overstated(RECORDS, "fashion_mnist", "linf")
    # ima at 0.2: PGD 0.5, worst 0.22, gap 0.28 > 0.1; ima at 0.1: gap 0.18 > 0.098; mma: gaps 0.02 at most
    assert [(r.label, r.eps) for r in frame.itertuples()] == [("ima", 0.1), ("ima", 0.2)]
    assert frame.iloc[1]["gap"] == pytest.approx(0.28) and frame.iloc[1]["resolution"] == pytest.approx(0.1)
    # per seed: ima at 0.2 gaps 0.30 (seed 0) and 0.26 (seed 1); at 0.1 gaps 0.20 and 0.16
    assert list(frame["seeds"]) == [2, 2]
    assert list(frame["smallest_gap"]) == pytest.approx([0.16, 0.26])


def test_smallest_gap_shows_a_seed_where_pgd_was_not_beaten() -> None:
    # seed 1's AutoAttack matched PGD: the mean gap is beyond the resolution, the smallest gap is 0
    records = [made_up("ima", 0, (0.8, 0.6, 0.5), (0.8, 0.2, 0.1)), made_up("ima", 1, (0.8, 0.6, 0.5), (0.8, 0.6, 0.5))]
    frame = overstated(records, "fashion_mnist", "linf").set_index("eps")
    assert frame.loc[0.2, "gap"] == pytest.approx(0.2) and frame.loc[0.2, "smallest_gap"] == pytest.approx(0.0)


def test_masking_signs() -> None:
    rising = made_up("adv", 0, (0.8, 0.3, 0.35), (0.8, 0.1, 0.05))
    signs = masking_signs([rising, RECORDS[2]])
    assert set(signs["sign"]) == {"pgd rises", "autoattack beats pgd"}
    rise = signs[signs["sign"] == "pgd rises"].iloc[0]
    assert rise["eps"] == 0.2 and rise["before"] == 0.3 and rise["value"] == 0.35
    beaten = signs[signs["sign"] == "autoattack beats pgd"]
    assert list(beaten["eps"]) == [0.1, 0.2] and set(beaten["label"]) == {"adv"}


def test_records_without_autoattack_show_as_not_measured() -> None:
    plain = [made_up("ima", 0, (0.8, 0.6, 0.5), None), made_up("mma", 0, (0.8, 0.5, 0.3), None)]
    assert not measured(plain) and measured(RECORDS)
    frame = attack_frame(plain)
    assert frame["autoattack"].isna().all() and list(frame["pgd"][:3]) == [0.8, 0.6, 0.5]
    assert overstated(plain, "fashion_mnist", "linf").empty
    assert (rankings(plain, "fashion_mnist", "linf")["worst_of_both"] == "not measured").all()
    assert format_table(robustness_table(plain, "fashion_mnist", "linf")).loc["ima", ("0.1", "autoattack")] \
        == "not measured"
    command = not_measured_command(plain)
    assert command is not None and command.startswith("python -m imalib evaluate --attack autoattack results/")
    assert not_measured_command(RECORDS) is None


def test_chapter_values_are_glue_ready() -> None:
    values = chapter_values(RECORDS, "fashion_mnist", "linf")
    assert values["fashion_mnist_linf_aa_status"] == "AutoAttack measured on 4 of 4 runs"
    table = values["fashion_mnist_linf_aa_table"]
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["0", "0.1", "0.2"]
    assert table.loc["ima", "0.2"] == "0.500 / 0.220 / 0.220"
    over = values["fashion_mnist_linf_aa_overstated"]
    assert isinstance(over, pd.DataFrame) and list(over.index) == ["ima", "ima"] and list(over["eps"]) == [0.1, 0.2]
    plain = chapter_values([made_up("ima", 0, (0.8, 0.6, 0.5), None)], "fashion_mnist", "linf")
    assert plain["fashion_mnist_linf_aa_table"].loc["ima", "0.1"] == "0.600 / – / –"  # type: ignore[union-attr]
    assert str(plain["fashion_mnist_linf_aa_status"]).startswith("not measured yet; to add it to a run whose weights exist: "
                                                                  "`python -m imalib evaluate --attack autoattack")
    assert plain["fashion_mnist_linf_aa_overstated"] == "not measured yet"
    assert set(chapter_values(RECORDS, "svhn", "linf").values()) == {"no runs of this table yet"}


def test_chapter_values_on_the_committed_records() -> None:
    from imalib.records import collect

    records = collect(Path(__file__).resolve().parents[1] / "results", dataset="fashion_mnist")
    for norm in ("linf", "l2"):
        values = chapter_values(records, "fashion_mnist", norm, results_root="../results")
        table = values[f"fashion_mnist_{norm}_aa_table"]
        assert isinstance(table, pd.DataFrame) and len(table) >= 5
        if not measured(r for r in records if r.norm == norm):
            assert "not measured yet" in str(values[f"fashion_mnist_{norm}_aa_status"])


def test_plot_of_broken_examples_titles_the_classes() -> None:
    import torch

    from imalib.book.plots import plot_broken_examples

    frame = pd.DataFrame([{"label": "ima", "norm": "linf", "eps": 0.1, "index": 3, "y": 1, "adversarial_prediction": 2,
                           "image": torch.zeros(1, 4, 4), "adversarial": torch.ones(1, 4, 4), "distance": 0.1}])
    figure = plot_broken_examples(frame, ("a", "b", "c"))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["ima, L-inf 0.1\nb", "→ c\nmoved 0.1"]
    empty = plot_broken_examples(frame.iloc[:0], ("a", "b", "c"))
    assert "broke no image" in empty.axes[0].texts[0].get_text()


def test_standard_check_pairs_the_two_sets_on_the_same_images(tmp_path: Path) -> None:
    import torch

    from imalib.book.robustness import standard_check
    from imalib.io import save_torch, write_json
    from imalib.records import RESULT_FILE

    record = made_up("ima", 0, (0.8, 0.6, 0.5), (0.8, 0.5, 0.4), n_test=6)
    custom = torch.tensor([[1, 1, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    standard = torch.tensor([[1, 0, 0, 1]], dtype=torch.bool)  # eps 0.2 on images 0, 2, 3, 5
    entry = AutoAttackEntry(eps=(0.2,), accuracy=(0.5,), worst_of_both=(0.5,), pgd_accuracy=(0.5,), n_images=4,
                            settings={"version": "standard"}, seconds=1.0, level_seconds=(1.0,), indices=(0, 2, 3, 5))
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / RESULT_FILE, replace(record, autoattack_standard=entry).to_json())
    save_torch(run / "autoattack.pt", custom)
    save_torch(run / "autoattack_standard.pt", standard)
    skipped = tmp_path / "plain"
    skipped.mkdir()
    write_json(skipped / RESULT_FILE, record.to_json())
    cascade = tmp_path / "cascade"  # custom entry from the cascade: AutoAttack alone not measured, not compared
    cascade.mkdir()
    assert record.autoattack is not None
    only_survivors = replace(record.autoattack, accuracy=None, mode="cascade")
    write_json(cascade / RESULT_FILE, replace(record, autoattack=only_survivors, autoattack_standard=entry).to_json())
    save_torch(cascade / "autoattack.pt", custom)
    save_torch(cascade / "autoattack_standard.pt", standard)
    frame = standard_check([run, skipped, cascade])
    assert len(frame) == 1
    row = frame.iloc[0]
    # custom on images 0, 2, 3, 5 at eps 0.2: 1, 0, 0, 0; standard: 1, 0, 0, 1
    assert row["custom"] == 0.25 and row["standard"] == 0.5 and row["n_images"] == 4
    assert row["only_standard"] == 0 and row["only_custom"] == 1 and row["seed"] == record.seed


def test_attack_summary_quotes_the_largest_gap_and_the_changed_rankings() -> None:
    from imalib.book.robustness import attack_summary

    summary = attack_summary(RECORDS, "fashion_mnist", "linf")
    assert summary.measured == ("ima", "mma") and summary.unmeasured == () and summary.complete
    # ima at eps 0.2: PGD 0.5, worst of both (0.20 + 0.24) / 2 = 0.22
    assert summary.largest_label == "ima" and summary.largest_eps == 0.2
    assert summary.largest_gap == pytest.approx(0.28)
    assert ("ima", 0.2) in summary.overstated and all(label == "ima" for label, _ in summary.overstated)
    assert summary.changed_eps == (0.1, 0.2)  # ima > mma under PGD, mma > ima under the worst of both
    assert summary.autoattack_beats_pgd == 4  # both ima seeds at 0.1 and 0.2
    partial = attack_summary([*RECORDS, made_up("trades", 0, (0.7, 0.4, 0.2), None)], "fashion_mnist", "linf")
    assert partial.unmeasured == ("trades",) and not partial.complete and partial.changed_eps == ()
    none = attack_summary([made_up("ima", 0, (0.8, 0.6, 0.5), None)], "fashion_mnist", "linf")
    assert none.measured == () and math.isnan(none.largest_gap)
    empty = attack_summary([], "fashion_mnist", "linf")
    assert empty.measured == empty.unmeasured == () and not empty.complete and math.isnan(empty.largest_gap)


def test_pair_eps_names_the_levels_or_says_not_measured() -> None:
    from imalib.book.verdict import ImageVerdict, pair_eps

    accuracy = pd.DataFrame({0.0: [0.8, 0.8], 0.1: [0.6, 0.3], 0.2: [0.35, 0.3]}, index=["ima", "trades"])
    table = ImageVerdict(accuracy, n_test=300, seeds=1, max_se=0.029)
    assert pair_eps(table, "ima", "trades") == "0.1"
    assert pair_eps(table, "ima", "trades", unresolved=True) == "0.2"
    assert pair_eps(table, "ima", "mma") == "not measured yet" == pair_eps(None, "ima", "trades")


def test_seed_table_shows_the_spread_of_the_worst_of_both_and_each_rows_seeds() -> None:
    one_seed = made_up("trades", 0, (0.8, 0.4, 0.2), (0.8, 0.38, 0.2))
    shown = seed_table(robustness_table([*RECORDS, one_seed], "fashion_mnist", "linf"))
    assert shown is not None and list(shown.index) == ["ima", "mma", "trades"]
    assert list(shown["seeds"]) == [2, 2, 1]
    assert shown.loc["ima", "0.2"] == "0.220 ± 0.028" and shown.loc["trades", "0.1"] == "0.380"
    assert seed_table(robustness_table([RECORDS[0], RECORDS[2]], "fashion_mnist", "linf")) is None
    values = chapter_values([RECORDS[0], RECORDS[2]], "fashion_mnist", "linf")
    assert "one training seed per row" in values["fashion_mnist_linf_aa_seeds"]
    assert isinstance(chapter_values(RECORDS, "fashion_mnist", "linf")["fashion_mnist_linf_aa_seeds"], pd.DataFrame)


def test_the_verdict_needs_the_seed_means_apart_where_rows_have_seeds() -> None:
    from imalib.book.verdict import ImageVerdict

    accuracy = pd.DataFrame({0.0: [0.8, 0.8], 0.1: [0.6, 0.45]}, index=["ima", "trades"])
    tight = pd.DataFrame({0.0: [0.0, 0.0], 0.1: [0.01, 0.01]}, index=["ima", "trades"])
    seeds = pd.Series({"ima": 3, "trades": 3})
    assert ImageVerdict(accuracy, 300, 3, 0.029, tight, seeds).resolved_eps("ima", "trades") == [0.1]
    wide = ImageVerdict(accuracy, 300, 3, 0.029, tight * 10, seeds)   # sd 0.1: 0.15 < 2 sqrt(2 * 0.01 / 3)
    assert wide.resolved_eps("ima", "trades") == [] and wide.unresolved_eps("ima", "trades") == [0.1]
    mixed = ImageVerdict(accuracy, 300, 1, 0.029, tight * 10, pd.Series({"ima": 3, "trades": 1}))
    assert mixed.resolved_eps("ima", "trades") == [0.1]      # one seed on a side: the binomial test alone
    assert mixed.seed_text() == "3 training seeds for ima; 1 training seed for trades"
    assert ImageVerdict(accuracy, 300, 1, 0.029).seed_text() == "1 training seed per row"
