"""Why a run is slow: TTFT and E2E split into their parts, the part that dominates named with
numbers, and the likely cause of each cold start a warm server should not have had. Pure
functions over records (and the bundled server's log lines, read by the caller): no I/O.

The parts follow what the server's durations really cover (sentinel_exp/serve/routes.py `Generations.events`,
serve/scheduler.py; Ollama's server/sched.go does the same): `load_duration` runs from the
request's arrival until the model is ready, a load it waited for included; the wait for a free
generation slot comes after that and is in `total_duration` only; `prompt_eval_duration` starts once
model and slot are ready; `eval_duration` is the decode after the first token. So per request

    TTFT = load + queue + prefill + other      (other: first token out, HTTP, the client)
    E2E  = load + queue + prefill + decode + other
    queue = total_duration - load - prefill - decode

Shares are of the mean parts over the same requests: means add up, percentiles do not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sentinel_exp.analysis.stats import output_tokens, successful
from sentinel_exp.records import RequestRecord, request_numbers
from sentinel_exp.serve.keepalive import keep_alive_seconds, server_default_seconds

# A part under half a percent is left out of the verdict's text (its share metric stays), but
# model load never is: "no request was cold" rules out a cause as plainly as a large share names one.
SHOWN_SHARE = 0.005
DOMINANT_SHARE = 0.5


class PartName(StrEnum):
    LOAD = "load"
    QUEUE = "queue"
    PREFILL = "prefill"
    DECODE = "decode"
    OTHER = "other"
    # What the client sees when the server reports no durations (OpenAI API).
    TTFB = "ttfb"
    AFTER_TTFB = "after_ttfb"
    TTFT = "ttft"


PART_LABELS: Mapping[PartName, str] = {
    PartName.LOAD: "model load",
    PartName.QUEUE: "queueing",
    PartName.PREFILL: "prefill",
    PartName.DECODE: "decode",
    PartName.OTHER: "other",
    PartName.TTFB: "time to first byte",
    PartName.AFTER_TTFB: "first byte to first token",
    PartName.TTFT: "time to first token",
}


# What shortens each part, when it is the largest: the verdict's last lines.
FIXES: Mapping[PartName, str] = {
    PartName.LOAD: "keep the model loaded: a longer workload.keep_alive (-1 = forever) or server default "
    "(OLLAMA_KEEP_ALIVE, server.keep_alive), and the same runner options (num_ctx, num_batch, num_gpu, ...) "
    "on every request",
    PartName.QUEUE: "more generation slots on the server (OLLAMA_NUM_PARALLEL; server.sim.parallel on the "
    "simulated one), or fewer requests at once (workload.concurrency, workload.rate)",
    PartName.PREFILL: "shorter prompts, or prompt caching: what requests share (a system prompt, a document) "
    "first, so that the server prefills it once",
    PartName.DECODE: "num_thread at the physical cores where llama.cpp runs on the CPU, more layers on the GPU "
    "(num_gpu, -1 = automatic), a smaller or more quantised model, or fewer output tokens (num_predict)",
}


class ColdCause(StrEnum):
    IDLE = "idle"
    OPTIONS = "options"
    REPLACED = "replaced"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Part:
    name: PartName
    mean_ms: float
    share: float  # of the mean latency, 0..1
    detail: str = ""  # what explains it, e.g. "9 of 30 requests were cold"

    def text(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.share * 100:.0f}% {PART_LABELS[self.name]}{detail}"


@dataclass(frozen=True)
class Breakdown:
    """One latency (TTFT or E2E) split into parts whose means add up to its mean."""

    latency: str  # "ttft" or "e2e": the metric prefix
    label: str  # "TTFT"
    p50_ms: float
    mean_ms: float
    requests: int
    parts: tuple[Part, ...]

    @property
    def dominant(self) -> Part:
        return max(self.parts, key=lambda p: p.share)

    def line(self) -> str:
        top = self.dominant
        lead = (
            f"{self.label} is mostly {PART_LABELS[top.name]}"
            if top.share >= DOMINANT_SHARE
            else f"{self.label}'s largest part is {PART_LABELS[top.name]}"
        )
        shown = sorted(
            (p for p in self.parts if p.share >= SHOWN_SHARE or p.name == PartName.LOAD), key=lambda p: -p.share
        )
        return (
            f"{lead}: p50 {self.p50_ms:,.0f} ms, mean {self.mean_ms:,.0f} ms = "
            + ", ".join(p.text() for p in shown)
            + f" (mean shares over {self.requests} request{'' if self.requests == 1 else 's'})"
        )

    def metrics(self) -> dict[str, float]:
        return {f"{self.latency}_share_{p.name}": p.share for p in self.parts}


@dataclass(frozen=True)
class Diagnosis:
    """The run's verdict: where TTFT and E2E went, and what the server did not say."""

    breakdowns: tuple[Breakdown, ...] = ()
    unknown: str = ""  # which parts cannot be told apart, and why

    def lines(self) -> list[str]:
        out = [b.line() for b in self.breakdowns]
        if self.breakdowns and self.unknown:
            out.append(self.unknown)
        return out + self.fixes()

    def fixes(self) -> list[str]:
        """What would shorten the largest part of each latency, once per part: `to cut prefill
        (TTFT's largest part): shorter prompts, ...`."""
        where: dict[PartName, list[str]] = {}
        for b in self.breakdowns:
            if b.dominant.name in FIXES and b.dominant.share > 0:
                where.setdefault(b.dominant.name, []).append(b.label)
        return [
            f"to cut {PART_LABELS[name]} ({' and '.join(labels)}'s largest part): {FIXES[name]}"
            for name, labels in where.items()
        ]

    def text(self) -> str:
        """The verdict as one tag value (`sentinel.verdict`); empty when nothing succeeded."""
        return "\n".join(self.lines())

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for b in self.breakdowns:
            out |= b.metrics()
        return out


def diagnose(records: Sequence[RequestRecord], metrics: Mapping[str, float] | None = None) -> Diagnosis:
    """Split TTFT and E2E into parts over the successful measured requests. With the server's
    durations (Ollama API): load, queue, prefill, decode and other. Without them (OpenAI API) only
    what the client sees: TTFB, then first byte to first token, then decode. `metrics` gives the
    p50s shown (the summary table's); without it they are computed here."""
    metrics = metrics or {}
    ok = successful(records)
    with_durations = [
        r
        for r in ok
        if r.ttft_ms is not None
        and r.e2e_ms is not None
        and r.load_duration_ms is not None
        and r.prompt_eval_duration_ms is not None
        and r.eval_duration_ms is not None
        and r.total_duration_ms is not None
    ]
    if with_durations:
        return Diagnosis(_server_breakdowns(with_durations, metrics))
    seen = [r for r in ok if r.ttfb_ms is not None and r.ttft_ms is not None and r.e2e_ms is not None]
    if not seen:
        return Diagnosis()
    return Diagnosis(
        _client_breakdowns(seen, metrics),
        "model load, queueing and prefill are unknown: the server reports no durations (OpenAI API), "
        "so TTFB holds them all",
    )


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return math.fsum(items) / len(items) if items else 0.0


def _p50(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _breakdown(
    latency: str,
    label: str,
    totals: Sequence[float],
    parts: Sequence[tuple[PartName, float, str]],
    metrics: Mapping[str, float],
) -> Breakdown:
    mean = _mean(totals)
    p50 = metrics.get(f"{latency}_ms_p50", _p50(totals))

    def share(part_ms: float) -> float:
        # A part a little below 0 is clock noise between the server's and the client's clocks.
        return min(1.0, max(0.0, part_ms / mean)) if mean > 0 else 0.0

    return Breakdown(
        latency=latency,
        label=label,
        p50_ms=p50,
        mean_ms=mean,
        requests=len(totals),
        parts=tuple(Part(name, part_ms, share(part_ms), detail) for name, part_ms, detail in parts),
    )


def _tokens_at(tokens: float, ms: float, what: str) -> str:
    """`412 prompt tokens at 1,300 tok/s`: the mean count, and the rate of the mean part."""
    counted = f"{tokens:,.0f} {what}"
    return f"{counted} at {tokens / (ms / 1000.0):,.0f} tok/s" if ms > 0 else counted


def _server_breakdowns(rs: Sequence[RequestRecord], metrics: Mapping[str, float]) -> tuple[Breakdown, ...]:
    load = [r.load_duration_ms or 0.0 for r in rs]
    prefill = [r.prompt_eval_duration_ms or 0.0 for r in rs]
    decode = [r.eval_duration_ms or 0.0 for r in rs]
    total = [r.total_duration_ms or 0.0 for r in rs]
    queue = [max(0.0, t - a - b - c) for t, a, b, c in zip(total, load, prefill, decode, strict=True)]
    ttft = [r.ttft_ms or 0.0 for r in rs]
    e2e = [r.e2e_ms or 0.0 for r in rs]

    cold = sum(1 for r in rs if r.cold)
    load_detail = (
        f"{cold} of {len(rs)} {'request was' if len(rs) == 1 else 'requests were'} cold"
        if cold
        else ("no request was cold")
    )
    prompt_tokens = _mean(float(r.prompt_eval_count or 0) for r in rs)
    prefill_detail = _tokens_at(prompt_tokens, _mean(prefill), "prompt tokens")
    decode_detail = _tokens_at(_mean(float(output_tokens(r)) for r in rs), _mean(decode), "output tokens")
    queue_detail = "waiting for a free generation slot"

    m_load, m_queue, m_prefill, m_decode = _mean(load), _mean(queue), _mean(prefill), _mean(decode)
    ttft_parts = [
        (PartName.LOAD, m_load, load_detail),
        (PartName.QUEUE, m_queue, queue_detail),
        (PartName.PREFILL, m_prefill, prefill_detail),
        (PartName.OTHER, _mean(ttft) - m_load - m_queue - m_prefill, "first token out, HTTP and the client"),
    ]
    e2e_parts = [
        (PartName.LOAD, m_load, load_detail),
        (PartName.QUEUE, m_queue, queue_detail),
        (PartName.PREFILL, m_prefill, prefill_detail),
        (PartName.DECODE, m_decode, decode_detail),
        (PartName.OTHER, _mean(e2e) - m_load - m_queue - m_prefill - m_decode, "HTTP and the client"),
    ]
    return (
        _breakdown("ttft", "TTFT", ttft, ttft_parts, metrics),
        _breakdown("e2e", "E2E", e2e, e2e_parts, metrics),
    )


def _client_breakdowns(rs: Sequence[RequestRecord], metrics: Mapping[str, float]) -> tuple[Breakdown, ...]:
    ttfb = [r.ttfb_ms or 0.0 for r in rs]
    ttft = [r.ttft_ms or 0.0 for r in rs]
    e2e = [r.e2e_ms or 0.0 for r in rs]
    m_ttfb, m_ttft = _mean(ttfb), _mean(ttft)
    out_tokens = _mean(float(output_tokens(r)) for r in rs)
    decode_ms = _mean(e2e) - m_ttft
    decode_detail = _tokens_at(out_tokens, decode_ms, "output tokens")
    ttft_parts = [
        (PartName.TTFB, m_ttfb, "load, queueing and prefill: not told apart"),
        (PartName.AFTER_TTFB, m_ttft - m_ttfb, ""),
    ]
    e2e_parts = [
        (PartName.TTFT, m_ttft, ""),
        (PartName.DECODE, decode_ms, decode_detail),
    ]
    return (
        _breakdown("ttft", "TTFT", ttft, ttft_parts, metrics),
        _breakdown("e2e", "E2E", e2e, e2e_parts, metrics),
    )


# --- Cold starts a warm server should not have had -------------------------------------------


def keep_alive_in_force(workload_keep_alive: Any, server_keep_alive: Any) -> float:
    """Seconds the server keeps the model after a request: the request's keep_alive when the run
    sends one, else the server's default (server.keep_alive, as OLLAMA_KEEP_ALIVE; 5 minutes)."""
    sent = keep_alive_seconds(workload_keep_alive)
    if sent is not None:
        return sent
    return server_default_seconds(None if server_keep_alive is None else str(server_keep_alive))


@dataclass(frozen=True)
class Unload:
    """One `unloaded <tag> (<reason>)` line of a bundled server's log."""

    at: float  # wall clock, unix seconds
    tag: str
    reason: str


# serve/__main__.py logs "%(asctime)s %(message)s"; serve/scheduler.py writes the message.
_UNLOAD_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) unloaded (\S+) \((.*)\)\s*$")


def parse_unloads(lines: Iterable[str]) -> list[Unload]:
    """The model unloads a bundled server logged; other lines are skipped."""
    out = []
    for line in lines:
        match = _UNLOAD_LINE.match(line)
        if match:
            # asctime is local time, as datetime reads a naive timestamp.
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append(Unload(at, match.group(2), match.group(3)))
    return out


@dataclass(frozen=True)
class ColdStart:
    """A cold measured request after the model had been loaded, and its likely cause."""

    number: int  # the request's number in the run (records.request_numbers: 1-based, warmup included)
    cause: ColdCause
    detail: str = ""


@dataclass
class _Span:
    start: float
    end: float


def _span(r: RequestRecord) -> _Span | None:
    if r.e2e_ms is None:
        return None
    # t0 is started_at plus the client-side wait (queue_ms); the server sees the request then.
    start = r.started_at + (r.queue_ms or 0.0) / 1000.0
    return _Span(start, start + r.e2e_ms / 1000.0)


def _format_keep_alive(seconds: float) -> str:
    return "forever" if math.isinf(seconds) else f"{seconds:g} s"


def classify_cold_starts(
    records: Sequence[RequestRecord], keep_alive_s: float, unloads: Sequence[Unload] = (), model: str = ""
) -> list[ColdStart]:
    """Each cold measured request that came after an earlier request had finished (so the model
    had been loaded, and was lost again), with its likely cause: the server's own unload line for
    `model` in between when there is one (replaced by another model, runner options changed,
    keep_alive expired), else an idle gap longer than keep_alive, else unknown. A cold request
    while nothing had finished yet waited for the first load: that is no loss."""
    spans = [(r, s) for r in records if (s := _span(r)) is not None]
    mine = [u for u in unloads if not model or u.tag == model]
    number = request_numbers(records)
    found = []
    for r in sorted((r for r in records if r.measured and r.cold), key=lambda r: r.started_at):
        me = _span(r) or _Span(r.started_at + (r.queue_ms or 0.0) / 1000.0, math.inf)
        before = [s for q, s in spans if q is not r and s.end <= me.start]
        if not before:
            continue
        last = max(before, key=lambda s: s.end)
        busy = any(s.start < me.start < s.end for q, s in spans if q is not r)
        gap = 0.0 if busy else me.start - last.end
        # The unload that cost this load: after the last request before it began (timestamps are
        # cut to the millisecond), before this request's own load finished.
        load_end = me.start + (r.load_duration_ms or 0.0) / 1000.0
        seen = [u for u in mine if last.start - 0.001 <= u.at <= load_end + 0.001]
        if seen:
            found.append(_from_log(number.get(id(r), 0), max(seen, key=lambda u: u.at).reason))
        elif gap > keep_alive_s:
            detail = f"idle {gap:,.1f} s > keep_alive {_format_keep_alive(keep_alive_s)}"
            found.append(ColdStart(number.get(id(r), 0), ColdCause.IDLE, detail))
        else:
            found.append(ColdStart(number.get(id(r), 0), ColdCause.UNKNOWN, f"idle {gap:,.1f} s"))
    return found


def _from_log(number: int, reason: str) -> ColdStart:
    if reason.startswith("replaced by "):
        return ColdStart(number, ColdCause.REPLACED, reason)
    if reason.startswith("runner options changed"):
        return ColdStart(number, ColdCause.OPTIONS, reason.partition(": ")[2] or reason)
    if reason.startswith("keep_alive"):
        return ColdStart(number, ColdCause.IDLE, reason)
    return ColdStart(number, ColdCause.UNKNOWN, reason)


_CAUSE_TEXT: Mapping[ColdCause, str] = {
    ColdCause.IDLE: "the model was unloaded after an idle gap longer than keep_alive ({detail}); "
    "send a longer workload.keep_alive (or set server.keep_alive) to keep it loaded",
    ColdCause.OPTIONS: "the runner options changed ({detail}), which reloads the model; "
    "send the same num_ctx, num_batch, num_gpu, ... with every request to this server",
    ColdCause.REPLACED: "another model was requested in between and replaced this one ({detail}); "
    "measure on a server nothing else uses",
    ColdCause.UNKNOWN: "cause unknown ({detail}, not beyond keep_alive); another client may have "
    "loaded another model or other runner options",
}


def cold_start_warnings(cold_starts: Sequence[ColdStart]) -> list[str]:
    """One warning per distinct cause, with the count and the first request: not one per request."""
    by_cause: dict[ColdCause, list[ColdStart]] = {}
    for c in cold_starts:
        by_cause.setdefault(c.cause, []).append(c)
    out = []
    for cause, starts in by_cause.items():
        first = min(starts, key=lambda c: c.number)
        n = len(starts)
        noun = "request was" if n == 1 else "requests were"
        out.append(
            f"{n} measured {noun} cold after the model had been loaded (first: request {first.number}): "
            + _CAUSE_TEXT[cause].format(detail=first.detail)
        )
    return out
