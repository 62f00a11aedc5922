"""Sub-millisecond sleeps for the event loop.

asyncio's epoll wait rounds its timeout up to whole milliseconds, so `asyncio.sleep(0.005)`
wakes anywhere in 5-6 ms. The simulated server promises exact timing, so the last stretch of
each wait is handed to one helper thread that sleeps with nanosecond timeouts and wakes the
loop with call_soon_threadsafe. The hand-over itself takes a little while (thread wake-up, loop
wake-up); the timer measures that lateness as it goes and aims that much earlier, so waiting
coroutines resume on time rather than consistently late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time

# Below this, the coarse asyncio sleep is skipped and the thread does all the waiting.
_COARSE_MARGIN_S = 0.002
# Lateness is averaged with this weight per wake-up, and never corrected by more than the cap.
_LATENESS_WEIGHT = 0.1
_LATENESS_CAP_S = 0.001


class PreciseTimer:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.lateness_s = 0.0  # running average of how late coroutines resumed, uncorrected

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sim-precise-timer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline = self._heap[0][0]
                remaining = deadline - time.perf_counter()
                if remaining > 0:
                    self._cond.wait(timeout=remaining)
                    continue
                _, _, loop, future = heapq.heappop(self._heap)
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, future)

    async def sleep_until(self, deadline: float) -> None:
        """Wait until time.perf_counter() >= deadline."""
        coarse = deadline - time.perf_counter() - _COARSE_MARGIN_S
        if coarse > 0:
            await asyncio.sleep(coarse)
        if deadline <= time.perf_counter():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        aim = deadline - self.lateness_s
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, (aim, next(self._counter), loop, future))
            self._cond.notify()
        await future
        late = time.perf_counter() - aim
        self.lateness_s += _LATENESS_WEIGHT * (min(max(late, 0.0), _LATENESS_CAP_S) - self.lateness_s)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
