"""Request records and telemetry samples of a made-up run, for the figure and report tests."""

from __future__ import annotations

from sentinel_exp.names import ErrorClass, Phase
from sentinel_exp.records import RequestRecord
from sentinel_exp.telemetry.gpu import GpuReading
from sentinel_exp.telemetry.sampler import Sample

T_START = 1_700_000_000.0


def record(
    index: int,
    phase: str = Phase.MEASURED,
    ttft: float = 100.0,
    e2e: float = 400.0,
    started_at: float = T_START,
    ok: bool = True,
    queue_ms: float = 0.5,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        phase=phase,
        prompt_index=0,
        api="chat",
        ok=ok,
        started_at=started_at,
        queue_ms=queue_ms,
        ttfb_ms=ttft / 2,
        ttft_ms=ttft,
        e2e_ms=e2e if ok else None,
        chunk_times_ms=[ttft, ttft + 10.0, ttft + 20.0],
        error_class=None if ok else ErrorClass.STREAM_CUT,
    )


def run_records(warmup: int = 3, measured: int = 20, failed: int = 2) -> list[RequestRecord]:
    """Sequential requests 0.5 s apart: warmup first, then measured with TTFT 100..100+measured-1
    ms, then failed ones."""
    out: list[RequestRecord] = []
    t = T_START + 1.0
    for i in range(warmup):
        out.append(record(i, Phase.WARMUP, ttft=500.0 + i, e2e=900.0, started_at=t))
        t += 0.5
    for i in range(measured):
        out.append(record(i, ttft=100.0 + i, e2e=300.0 + 2 * i, started_at=t))
        t += 0.5
    for i in range(failed):
        out.append(record(measured + i, ok=False, ttft=50.0, started_at=t))
        t += 0.5
    return out


def samples(n: int, gpu: bool = True, warmup: range = range(0)) -> list[Sample]:
    return [
        Sample(
            index=i,
            wall_time=T_START + 0.1 * (i + 1),
            mono_time=0.1 * (i + 1),
            phase=Phase.WARMUP if i in warmup else Phase.MEASURED,
            cpu_pct=25.0,
            cpu_pct_max_core=60.0,
            mem_used_mb=1000.0,
            mem_pct=10.0,
            server_cpu_pct=95.0,
            server_rss_mb=500.0,
            client_cpu_pct=20.0,
            gpus=(GpuReading(0, 80.0, 4000.0, 250.0, None, 50.0, 1800.0, 0),) if gpu else (),
        )
        for i in range(n)
    ]
