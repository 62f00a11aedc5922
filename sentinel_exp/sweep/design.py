"""The design of an interleaved study (pure): how many rounds, how many requests each arm sends in
each round (its block), and the order of the arms in every round.

The orders are balanced: every stretch of as many rounds as there are arms runs each arm once in
each position (the rows of a cyclic Latin square, the rows' order and the arms' labels shuffled
by the seed). A drift of the machine then falls on every arm alike, and the arm that runs right
after another (with the server's caches warm from it) is each arm in turn. With two arms the
rounds go A B, B A, ...: the A B B A of duet benchmarking.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_AUTO_ROUNDS = 50  # compare.blocks=null: at most this many rounds
REQUESTS_PER_STREAM = 4  # ... and blocks of at least four requests per concurrent stream: a block's median
# must not be the mean of two, which one cold start would drag


@dataclass(frozen=True)
class Schedule:
    """A study's rounds: orders[r] lists the arms (by index) in the order round r runs them."""

    block_sizes: tuple[tuple[int, ...], ...]  # [arm][round]: measured requests of that block
    orders: tuple[tuple[int, ...], ...]

    @property
    def rounds(self) -> int:
        return len(self.orders)

    def first_request(self, arm: int, round_index: int) -> int:
        """The arm's measured request that opens its block of round `round_index`."""
        return sum(self.block_sizes[arm][:round_index])


def auto_rounds(requests: int, concurrency: int) -> int:
    """compare.blocks=null: rounds of at least REQUESTS_PER_STREAM requests per concurrent stream
    (a block must fill the concurrency it measures), at most MAX_AUTO_ROUNDS, at least 1."""
    return max(1, min(MAX_AUTO_ROUNDS, requests // (REQUESTS_PER_STREAM * max(1, concurrency))))


def split(requests: int, rounds: int) -> tuple[int, ...]:
    """`requests` into `rounds` blocks as even as can be, the larger ones first."""
    base, extra = divmod(requests, rounds)
    return tuple(base + (1 if r < extra else 0) for r in range(rounds))


def balanced_orders(arms: int, rounds: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """Each round's order of the arms: rows of a cyclic Latin square, every `arms` rounds a fresh
    shuffle of the rows, the arm labels shuffled once."""
    rng = random.Random(seed)
    labels = list(range(arms))
    rng.shuffle(labels)
    orders: list[tuple[int, ...]] = []
    while len(orders) < rounds:
        rows = list(range(arms))
        rng.shuffle(rows)
        for row in rows:
            orders.append(tuple(labels[(row + position) % arms] for position in range(arms)))
    return tuple(orders[:rounds])


def plan(requests: list[int], concurrency: int, blocks: int | None, seed: int) -> Schedule:
    """The schedule of a fixed study: each arm's `requests` in `blocks` rounds (None: auto, from
    the smallest arm), the arms in balanced order."""
    rounds = blocks if blocks is not None else auto_rounds(min(requests), concurrency)
    rounds = max(1, min(rounds, min(requests)))  # no empty blocks
    sizes = tuple(split(n, rounds) for n in requests)
    return Schedule(sizes, balanced_orders(len(requests), rounds, seed))


def extended(schedule: Schedule, rounds: int, seed: int) -> Schedule:
    """The same study with more rounds, for a sequential study that has not decided yet: the new
    rounds keep the first round's block sizes and the balanced order goes on."""
    arms = len(schedule.block_sizes)
    orders = balanced_orders(arms, rounds, seed)
    sizes = tuple(
        tuple(per_arm[r] if r < len(per_arm) else per_arm[0] for r in range(rounds)) for per_arm in schedule.block_sizes
    )
    return Schedule(sizes, orders)
