"""Pace arithmetic (SPEC §2): how many SMTP transactions a list of rates admits by a time,
and when the n-th may start — shared by the limiter (delivery/limits.py) and the planner's
simulation and ETA, so the plan an operator reads uses the limiter's own numbers. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..config.values import Rate

# MAIL FROM leaves a few milliseconds after its permit, not always equally late: the pace's
# window keeps this margin, so jitter on the way never shows the relay one message too many.
WIRE_MARGIN = 0.01


def split_rates(rates: Sequence[Rate]) -> tuple[Rate | None, tuple[Rate, ...]]:
    """(pace, quotas): the rate with the shortest period (the strictest of those) paces;
    every other rate of the list is a quota. The planner uses the same split."""
    if not rates:
        return None, ()
    pace = min(rates, key=lambda r: (r.per_seconds, r.interval))
    i = list(rates).index(pace)
    return pace, tuple(rates[:i]) + tuple(rates[i + 1 :])


def starts_by(rates: Sequence[Rate], t: float) -> int:
    """Most transactions ``rates`` admit from a fresh state up to ``t`` seconds, inclusive.

    The pace admits its burst at 0 and then one every interval; a quota ``count`` per window.
    Exact for one rate; for a list it is the tightest single limit (the planner's estimate).
    """
    if t < 0:
        return 0
    pace, quotas = split_rates(rates)
    found: list[int] = []
    if pace is not None:
        found.append(pace.burst + math.floor(t / pace_interval(pace) + 1e-9))
    found += [q.count * (math.floor(t / q.per_seconds + 1e-9) + 1) for q in quotas]
    return min(found) if found else 2**62


def first_start_of(rates: Sequence[Rate], n: int) -> float:
    """Seconds from a fresh state until the ``n``-th transaction (1-based) may start.

    Exact for a pace with quotas whose windows hold whole paced blocks (the usual
    ``[14/second, 50000/day]``): the quota's block of ``count`` goes at the pace, then the
    next block starts one window after the first of the previous one.
    """
    if n <= 1 or not rates:
        return 0.0
    pace, quotas = split_rates(rates)

    def paced(k: int) -> float:  # k-th (0-based) start of a paced run
        if pace is None or k < pace.burst:
            return 0.0
        return (k - pace.burst + 1) * pace_interval(pace)

    at = paced(n - 1)
    for q in quotas:
        block, within = divmod(n - 1, q.count)
        at = max(at, block * q.per_seconds + paced(within))
    return at


def pace_interval(pace: Rate) -> float:
    """Seconds between two permits of a pace: its period and the wire margin over its count,
    so that even a message whose MAIL FROM leaves a little late and the next one that leaves
    on time stay inside the limit at the relay (10/second: 0.101 s)."""
    return (pace.per_seconds + WIRE_MARGIN) / pace.count
