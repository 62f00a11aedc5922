"""A model-free engine with exactly known timing: the fixture for tests and client overhead.

Tokens are words and sleeps. Each token is scheduled at an absolute deadline (first token at
ready + ttft_ms + prefill, then every itl_ms), so sleep overshoot never accumulates and the
median gap equals itl_ms. Faults can be scripted per request number.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from sentinel_exp.names import FaultKind, ServerKind
from sentinel_exp.serve.engine import (
    AbortConnection,
    EngineError,
    Event,
    Finished,
    GenerationRequest,
    ModelEntry,
    RawLine,
    Token,
)
from sentinel_exp.serve.engines.precise_timer import PreciseTimer
from sentinel_exp.serve.sim_settings import SimSettings, machine_slowdown

DEFAULT_MODELS = ("smollm2:135m", "qwen2.5:0.5b", "llama3.2:1b", "tinyllama", "phi3:3.8b-mini-4k-instruct-q4_K_M")
# Faults that strike mid-stream do so after this many tokens, so a partial answer exists.
FAULT_AFTER_TOKENS = 2
_WORDS = (
    "The",
    " sky",
    " looks",
    " blue",
    " because",
    " air",
    " scatters",
    " short",
    " wavelengths",
    " of",
    " sunlight",
    " more",
    " than",
    " long",
    " ones",
    ".",
)
_TEMPLATE_TOKENS_PER_MESSAGE = 4


def prompt_words(messages: list[dict[str, Any]]) -> list[str]:
    words: list[str] = []
    for message in messages:
        words.append(f"<|{message.get('role', 'user')}|>")
        content = message.get("content") or ""
        words.extend(content.split() if isinstance(content, str) else [])
        words.extend(["<|end|>"] * (_TEMPLATE_TOKENS_PER_MESSAGE - 2))
    return words


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Loaded:
    tag: str
    runner_options: dict[str, Any]


class SimulatedEngine:
    name: str = ServerKind.simulated

    def __init__(self, settings: SimSettings, model_tags: tuple[str, ...] | list[str] = DEFAULT_MODELS) -> None:
        settings.check()
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._cached_prompt: list[str] = []
        self._timer = PreciseTimer()
        self._entries = [self._entry(tag) for tag in dict.fromkeys(model_tags)]

    @staticmethod
    def _entry(tag: str) -> ModelEntry:
        digest = hashlib.sha256(f"simulated:{tag}".encode()).hexdigest()
        return ModelEntry(
            tag=tag,
            size_bytes=100 * 2**20,
            digest=digest,
            modified_at="2024-01-01T00:00:00Z",
            family="simulated",
            parameter_size="0",
            quantization_level="none",
            format="simulated",
            context_length=2048,
        )

    def models(self) -> list[ModelEntry]:
        return list(self._entries)

    def _jittered(self, ms: float) -> float:
        """A delay in seconds: `ms` slowed by the machine's noise of this moment, then jittered."""
        ms *= machine_slowdown(self.settings, time.time())
        if self.settings.jitter_ms <= 0:
            return ms / 1000.0
        return max(0.0, ms + self._rng.gauss(0.0, self.settings.jitter_ms)) / 1000.0

    async def load(self, tag: str, runner_options: dict[str, Any]) -> _Loaded:
        await asyncio.sleep(self._jittered(self.settings.load_ms))
        self._cached_prompt = []
        return _Loaded(tag, runner_options)

    async def unload(self, handle: Any) -> None:
        self._cached_prompt = []

    def loaded_size(self, handle: Any) -> tuple[int, int]:
        size = 100 * 2**20
        return size, round(size * self.settings.gpu_fraction)

    async def generate(self, handle: Any, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        fault = self.settings.faults.get(request.request_number)
        if fault == FaultKind.HTTP_500:
            raise EngineError("simulated server failure", status=500)
        if fault == FaultKind.HTTP_503:
            raise EngineError("server busy, please try again. maximum pending requests exceeded", status=503)

        ready = request.clock_start_ns / 1e9 if request.clock_start_ns else time.perf_counter()
        words = prompt_words(request.messages)
        uncached = len(words) - common_prefix(words, self._cached_prompt)
        self._cached_prompt = words
        num_predict: int | None = request.options.get("num_predict")  # the wire layer checked its type
        limited = num_predict is not None and num_predict > 0
        count = num_predict if num_predict is not None and limited else self.settings.tokens

        # Mid-stream faults strike after a few tokens, or before the last one of a short answer.
        strike_at = min(FAULT_AFTER_TOKENS, max(count - 1, 0))
        deadline = ready + self._jittered(self.settings.ttft_ms + self.settings.prefill_ms_per_token * uncached)
        first = last = deadline
        for k in range(count):
            if k:
                deadline += self._jittered(self.settings.itl_ms)
            await self._timer.sleep_until(deadline)
            if k == strike_at and fault is not None:
                await self._strike(fault)
                if fault == FaultKind.EARLY_END:
                    return  # a clean end of the HTTP body, but no final done:true chunk
                if fault == FaultKind.MALFORMED:
                    yield RawLine(b'{"model": "broken\n')
            last = time.perf_counter()
            if k == 0:
                first = last
            yield Token(_WORDS[k % len(_WORDS)])
        yield Finished(
            done_reason="length" if limited else "stop",
            prompt_eval_count=len(words),
            eval_count=count,
            prompt_eval_duration_ns=int((first - ready) * 1e9),
            eval_duration_ns=int((last - first) * 1e9),
        )

    @staticmethod
    async def _strike(fault: str) -> None:
        if fault == FaultKind.ERROR_MIDSTREAM:
            raise EngineError("simulated failure mid-stream")
        if fault == FaultKind.CUT_STREAM:
            raise AbortConnection("simulated cut stream")
        if fault == FaultKind.STALL:
            await asyncio.sleep(3600)
