"""giving_up.py: when a run stops being worth measuring."""

from __future__ import annotations

import pytest

from sentinel_exp.names import ErrorClass, Phase
from sentinel_exp.records import RequestRecord
from sentinel_exp.run.give_up import DEAD_AFTER, GiveUp, measured_nothing, warmup_timed_out

URL = "http://127.0.0.1:11500"


def rec(ok: bool = True, error: str | None = None, phase: str = Phase.MEASURED) -> RequestRecord:
    return RequestRecord(
        index=0, phase=phase, prompt_index=0, api="chat", ok=ok, error_class=error, error=error and "boom"
    )


def feed(watch: GiveUp, records: list[RequestRecord]) -> int | None:
    """The position of the record after which the run stops; None if it never does."""
    for position, record in enumerate(records, start=1):
        if watch.observe(record):
            return position
    return None


@pytest.mark.parametrize(
    ("max_rate", "min_requests", "records", "stops_after", "says"),
    [
        # No limit: failures alone never stop a run (but a dead server does).
        (None, 10, [rec(False, "HTTP500")] * 50, None, None),
        # 3 of 10 failed > 20%: stops on the 10th, the first moment the minimum is reached.
        (0.2, 10, [rec()] * 7 + [rec(False, "HTTP500")] * 3, 10, "error rate 30% after 10 measured requests"),
        # 2 of 10 is not above 20%.
        (0.2, 10, [rec()] * 8 + [rec(False, "HTTP500")] * 2, None, None),
        # Warmup failures are not in the rate.
        (0.2, 5, [rec(False, "HTTP500", Phase.WARMUP)] * 5 + [rec()] * 5, None, None),
        # Cancelled requests (a stop) are neither ok nor failed.
        (0.2, 5, [rec()] * 4 + [rec(False, ErrorClass.CANCELLED)] * 6, None, None),
        # Connection errors in a row: the server is gone, whatever the limit.
        (None, 10, [rec()] * 3 + [rec(False, "ConnectError")] * DEAD_AFTER, 3 + DEAD_AFTER, "stopped answering"),
        # ... but not when a request got through in between.
        (None, 10, ([rec(False, "ConnectError")] * (DEAD_AFTER - 1) + [rec()]) * 3, None, None),
    ],
)
def test_when_a_run_gives_up(max_rate, min_requests, records, stops_after, says):
    watch = GiveUp(URL, max_rate, min_requests)
    assert feed(watch, records) == stops_after
    if says:
        assert says in (watch.reason or "")


def test_the_reasons_name_the_url_the_limit_and_the_error_classes():
    watch = GiveUp(URL, 0.5, 4)
    feed(watch, [rec(False, "HTTP503"), rec(False, "ReadTimeout"), rec(False, "HTTP503"), rec()])
    assert watch.reason == (
        "error rate 75% after 4 measured requests is above workload.max_error_rate=0.5 (HTTP503 2, ReadTimeout 1)"
    )
    dead = GiveUp(URL)
    feed(dead, [rec(False, "ConnectError")] * DEAD_AFTER)
    assert dead.reason is not None and URL in dead.reason and "5 requests in a row could not connect" in dead.reason


def test_a_run_that_measured_nothing_says_which_errors():
    assert measured_nothing([rec(False, "ReadTimeout")] * 3 + [rec(False, "HTTP500")]) == (
        "no measured request succeeded: 4 failed (ReadTimeout 3, HTTP500 1)"
    )
    assert measured_nothing([rec(False, "ReadTimeout"), rec()]) is None
    assert measured_nothing([rec(phase=Phase.WARMUP), rec(False, ErrorClass.CANCELLED)]) is None  # nothing to judge


def test_a_warmup_that_only_timed_out_stops_the_run_before_measuring():
    def warm(error: str | None) -> RequestRecord:
        return rec(ok=error is None, error=error, phase=Phase.WARMUP)

    reason = warmup_timed_out([warm("ReadTimeout"), warm("ReadTimeout")], 0.2)
    assert reason is not None and reason.startswith("every warmup request (2) timed out after workload.timeout_s=0.2 s")
    assert warmup_timed_out([warm("ReadTimeout"), warm(None)], 0.2) is None  # one got through: measure
    assert warmup_timed_out([warm("HTTP500")], 0.2) is None  # another failure: the measured phase tells
    assert warmup_timed_out([rec(error="ReadTimeout")], 0.2) is None  # no warmup
