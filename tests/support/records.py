"""Records made of exactly the parts a test names: the verdict's and the doctor's unit tests."""

from __future__ import annotations

from sentinel_exp.names import Phase
from sentinel_exp.records import RequestRecord


def server_record(
    index: int,
    *,
    load: float = 1.0,
    queue: float = 0.0,
    prefill: float = 40.0,
    decode: float = 100.0,
    other: float = 2.0,
    prompt_tokens: int = 20,
    tokens: int = 21,
    cold: bool = False,
    block: int | None = None,
) -> RequestRecord:
    """A successful Ollama-API request whose parts are exactly these: TTFT = load + queue +
    prefill + other, E2E = TTFT + decode, total_duration = load + queue + prefill + decode."""
    ttft = load + queue + prefill + other
    return RequestRecord(
        index=index,
        phase=Phase.MEASURED,
        prompt_index=0,
        api="chat",
        ok=True,
        ttfb_ms=ttft,
        ttft_ms=ttft,
        e2e_ms=ttft + decode,
        chunk_times_ms=[ttft + decode * k / (tokens - 1) for k in range(tokens)],
        prompt_eval_count=prompt_tokens,
        eval_count=tokens,
        load_duration_ms=load,
        prompt_eval_duration_ms=prefill,
        eval_duration_ms=decode,
        total_duration_ms=load + queue + prefill + decode,
        cold=cold,
        block=block,
    )
