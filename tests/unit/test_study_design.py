"""The interleaved study's design (sweep/design.py) and its sequential looks (sweep/sequential.py):
balanced orders, block sizes, and alpha spent so that all looks together stay at 5%."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from support.studies import Noise, paired_study

from sentinel_exp.analysis.comparison import compare
from sentinel_exp.analysis.inference import look_alpha, spent_alpha
from sentinel_exp.sweep.design import auto_rounds, balanced_orders, extended, plan, split
from sentinel_exp.sweep.sequential import LookPlan, decided


@pytest.mark.parametrize(
    ("requests", "concurrency", "rounds"),
    [(20, 1, 5), (40, 1, 10), (400, 1, 50), (40, 4, 2), (3, 1, 1), (1000, 1, 50)],
)
def test_auto_rounds_keep_four_requests_per_stream_in_a_block(requests: int, concurrency: int, rounds: int) -> None:
    assert auto_rounds(requests, concurrency) == rounds


def test_blocks_split_the_requests_evenly_the_larger_first() -> None:
    assert split(10, 4) == (3, 3, 2, 2)
    assert split(8, 4) == (2, 2, 2, 2)
    assert sum(split(41, 10)) == 41


@pytest.mark.parametrize("arms", [2, 3, 5])
def test_every_stretch_of_rounds_runs_each_arm_once_in_each_position(arms: int) -> None:
    orders = balanced_orders(arms, 4 * arms, seed=7)
    for start in range(0, len(orders), arms):
        stretch = orders[start : start + arms]
        assert all(sorted(order) == list(range(arms)) for order in stretch)  # each round runs every arm once
        for position in range(arms):
            assert sorted(order[position] for order in stretch) == list(range(arms))
    # Two arms: A B, B A (or the other way round), stretch after stretch.
    two = balanced_orders(2, 6, seed=0)
    assert all({two[i], two[i + 1]} == {(0, 1), (1, 0)} for i in range(0, 6, 2))


def test_orders_are_seeded_and_differ_between_seeds() -> None:
    assert balanced_orders(3, 12, seed=1) == balanced_orders(3, 12, seed=1)
    assert len({balanced_orders(3, 12, seed=s) for s in range(6)}) > 1
    firsts = Counter(order[0] for order in balanced_orders(3, 300, seed=2))
    assert set(firsts.values()) == {100}  # no arm is favoured by going first


def test_a_plan_and_its_extension_keep_their_first_rounds() -> None:
    schedule = plan([20, 20], 1, None, seed=3)
    assert schedule.rounds == 5 and schedule.block_sizes == ((4,) * 5, (4,) * 5)
    assert schedule.first_request(1, 3) == 12
    longer = extended(schedule, 9, seed=3)
    assert longer.orders[:5] == schedule.orders and longer.rounds == 9
    assert longer.block_sizes[0] == (4,) * 9
    assert plan([20, 20], 1, 7, seed=3).block_sizes[0] == (3, 3, 3, 3, 3, 3, 2)  # compare.blocks=7
    assert plan([5, 5], 1, 50, seed=0).rounds == 5  # never an empty block


def test_alpha_spending_spends_a_share_early_and_all_of_it_by_the_end() -> None:
    assert spent_alpha(0.0, 0.05) == 0.0
    assert spent_alpha(1.0, 0.05) == pytest.approx(0.05)
    # Pocock-like: a look at a tenth of the budget may already spend about a seventh of alpha.
    assert spent_alpha(0.1, 0.05) == pytest.approx(0.05 * np.log(1 + (np.e - 1) * 0.1))
    assert 0.005 < spent_alpha(0.1, 0.05) < spent_alpha(0.5, 0.05) < 0.035
    fractions = [0.2, 0.45, 0.7, 1.0]
    levels = [look_alpha(f, p, 0.05) for p, f in zip([0.0, *fractions], fractions, strict=False)]
    assert all(level > 0 for level in levels) and sum(levels) == pytest.approx(0.05)


def test_looks_stop_when_decided_or_out_of_budget() -> None:
    big = compare(*paired_study(np.random.default_rng(1), rounds=20, effect=1.5, noise=Noise(0.02, 0.02, 2.0)))
    # Few noisy rounds of identical arms: a CI wider than the minimum effect on both sides.
    same = compare(*paired_study(np.random.default_rng(3), rounds=4, per_block=6, noise=Noise(0.1, 0.1, 3.0)))
    assert decided(big) and not decided(same)  # far beyond the 2% minimum effect; neither way
    looks = LookPlan(budget_s=100.0, first=10)
    assert looks.due(10) and not looks.due(12) and looks.due(15)
    first = looks.look(10, 20.0, lambda alpha: [big])
    assert first.decided and first.stop and not first.final
    assert 0 < first.alpha < 0.05

    undecided = LookPlan(budget_s=100.0, first=10)
    seen = [undecided.look(rounds, seconds, lambda alpha: [same]) for rounds, seconds in ((10, 30.0), (15, 45.0))]
    assert not any(look.stop for look in seen)
    last = undecided.look(20, 90.0, lambda alpha: [same])  # another 5 rounds would overrun 100 s
    assert last.final and last.stop and undecided.spent == pytest.approx(0.05)
    assert undecided.as_dict()["decided"] is False and undecided.as_dict()["alpha"] == last.alpha
