"""One record per request, and the JSONL file they are appended to as they finish."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sentinel_exp.names import Api, ErrorClass, Phase


@dataclass
class RequestRecord:
    """What one streamed request measured. Times are milliseconds from t0, the moment the
    request headers start going onto the socket (so connection-pool waits stay out of TTFT and
    are reported as queue_ms)."""

    index: int
    phase: Phase
    prompt_index: int
    api: Api
    ok: bool = False
    started_at: float = 0.0  # wall clock (unix seconds) when the request was submitted
    queue_ms: float | None = None  # submit -> headers start going out (pool wait, connect)
    send_ms: float | None = None  # headers start -> body sent
    ttfb_ms: float | None = None  # first response byte (headers received)
    ttft_ms: float | None = None  # first chunk carrying a non-empty token (thinking included)
    e2e_ms: float | None = None  # final chunk
    chunk_times_ms: list[float] = field(default_factory=list)  # every token chunk
    output_chars: int = 0
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    load_duration_ms: float | None = None
    prompt_eval_duration_ms: float | None = None
    eval_duration_ms: float | None = None
    total_duration_ms: float | None = None
    http_status: int | None = None
    error_class: str | None = None
    error: str | None = None
    cold: bool | None = None
    input_tokens_target: int | None = None  # workload.input_tokens drawn for it; prompt_eval_count is what it got
    num_predict: int | None = None  # the num_predict sent (None = not sent); eval_count is what came back
    block: int | None = None  # the round of an interleaved study it was measured in (None: not in one)

    @property
    def measured(self) -> bool:
        return self.phase == Phase.MEASURED

    @property
    def cancelled(self) -> bool:
        return self.error_class == ErrorClass.CANCELLED

    def to_json(self) -> str:
        # vars(), not asdict(): no deep copy of chunk_times_ms on the event loop per record.
        return json.dumps(vars(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key, vocabulary in (("phase", Phase), ("api", Api)):
            if key in known:  # ValueError for a value outside the vocabulary, as for a line cut short
                known[key] = vocabulary(known[key])
        return cls(**known)


class RecordWriter:
    """Appends each record the moment it is complete, flushed, so a crash or a kill keeps
    everything that finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # "x": records of two runs must never end up in one file (a reused output folder).
        self._file: IO[str] = open(path, "x", encoding="utf-8")  # noqa: SIM115 - open for the whole run, closed in close()

    def write(self, record: RequestRecord) -> None:
        self._file.write(record.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def request_numbers(records: Iterable[RequestRecord]) -> dict[int, int]:
    """Each record's request number, by `id(record)`: 1-based, in the order the run sent its
    requests, warmup included. The one numbering the console, the report's timeline and the
    simulated server's scripted faults (server.sim.faults: the Nth generation request it receives)
    share for a run. A record keeps `index`, its place within its phase (or a study's rounds), as
    run folders always have; the order is their submit times, phase and index breaking ties. A
    record never submitted (no submit time) has no number: no server saw it."""
    sent = [r for r in records if r.started_at > 0]
    order = sorted(sent, key=lambda r: (r.started_at, r.phase != Phase.WARMUP, r.block or 0, r.index))
    return {id(r): n for n, r in enumerate(order, 1)}


def read_records(path: Path) -> list[RequestRecord]:
    return list(iter_records(path.read_text(encoding="utf-8").splitlines()))


def iter_records(lines: Iterable[str]) -> Iterable[RequestRecord]:
    for line in lines:
        if line.strip():
            yield RequestRecord.from_dict(json.loads(line))
