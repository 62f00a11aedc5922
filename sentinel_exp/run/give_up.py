"""When a run stops being worth measuring (pure): too many measured requests fail, the server
stops answering, or nothing at all succeeded. Each gives one message and a FAILED run with exit
status 3 (errors.RunFailed) instead of thousands of error records and a run that looks finished."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sentinel_exp.names import Phase
from sentinel_exp.records import RequestRecord

# A new connection refused or not accepted: the server is gone, not slow. (A stream cut in the
# middle, RemoteProtocolError, is a request's own fault and counts only in the error rate.)
CONNECTION_ERRORS = frozenset({"ConnectError", "ConnectTimeout"})
# The class of a request that got no byte within workload.timeout_s (httpx's name, kept by both clients).
TIMEOUT = "ReadTimeout"
# In a row, whatever the phase: a server that died stops the run within a few requests.
DEAD_AFTER = 5


def error_classes(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())


@dataclass
class GiveUp:
    """Watches records as they finish; `reason` says why the run should stop, once it should."""

    url: str
    max_error_rate: float | None = None
    min_requests: int = 10
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    in_a_row: int = 0  # consecutive connection errors
    reason: str | None = None

    def observe(self, record: RequestRecord) -> str | None:
        """The reason to stop, the first time there is one; None otherwise (and after)."""
        if record.cancelled or self.reason is not None:
            return None
        self.in_a_row = self.in_a_row + 1 if record.error_class in CONNECTION_ERRORS else 0
        if record.measured:
            if record.ok:
                self.ok += 1
            else:
                self.failed[record.error_class or "Unknown"] += 1
        if self.in_a_row >= DEAD_AFTER:
            self.reason = (
                f"the server at {self.url} stopped answering: {self.in_a_row} requests in a row could not "
                f"connect ({record.error_class}: {record.error})"
            )
            return self.reason
        failures = self.failed.total()
        finished = self.ok + failures
        limit = self.max_error_rate
        if limit is not None and finished >= self.min_requests and failures / finished > limit:
            self.reason = (
                f"error rate {failures / finished:.0%} after {finished} measured requests is above "
                f"workload.max_error_rate={limit:g} ({error_classes(self.failed)})"
            )
        return self.reason


def warmup_timed_out(records: Sequence[RequestRecord], timeout_s: float) -> str | None:
    """Why a run should not start its measured phase: every warmup request timed out before its
    first byte, so every measured one would too (each costing the whole timeout)."""
    warmup = [r for r in records if r.phase == Phase.WARMUP and not r.cancelled]
    if not warmup or any(r.error_class != TIMEOUT for r in warmup):
        return None
    return (
        f"every warmup request ({len(warmup)}) timed out after workload.timeout_s={timeout_s:g} s without an "
        f"answer, so the measured requests would too; raise workload.timeout_s above the server's time to "
        f"first byte (a cold model load included)"
    )


def measured_nothing(records: Sequence[RequestRecord]) -> str | None:
    """Why a run that ran its course still measured nothing: no successful measured request."""
    measured = [r for r in records if r.measured and not r.cancelled]
    if not measured or any(r.ok for r in measured):
        return None
    counts = Counter(r.error_class or "Unknown" for r in measured)
    return f"no measured request succeeded: {len(measured)} failed ({error_classes(counts)})"
