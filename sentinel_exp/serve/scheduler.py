"""Model residency and request admission, with Ollama's semantics.

- One model is resident at a time. A request for another model, or for the same model with
  different runner options (num_ctx, num_batch, ...), waits for in-flight generations to end,
  then reloads: the silent cold start of docs/measurement.md, Ollama wire facts. As in Ollama's
  scheduler, a waiting reload holds back requests that arrive after it.
- keep_alive: a number of seconds, a Go duration, negative = forever, 0 = unload when done;
  omitted keeps the value the model was last given (default 5 minutes).
- `parallel` generations at once (Ollama's default is one slot); the rest queue. As in Ollama
  (the slot semaphore comes after the load checkpoint), that wait is in total_duration only,
  not in load_duration or prompt_eval_duration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sentinel_exp.serve.engine import Engine, ModelEntry
from sentinel_exp.serve.keepalive import DEFAULT_KEEP_ALIVE_S

# Loads and unloads go to the server's log (server.log beside a run): they explain cold starts.
log = logging.getLogger("sentinel_exp.serve")


@dataclass
class Resident:
    tag: str
    runner_options: dict[str, Any]
    handle: Any
    keep_alive_s: float
    loaded_ns: int  # perf_counter_ns when the load finished
    expires_at_wall: float | None = None  # None while in use or kept forever


@dataclass
class Admission:
    """A request admitted to generate: the resident model and when it became ready."""

    resident: Resident
    ready_ns: int
    # Until when the request could not have started: the end of a queue wait or of a load
    # (its own or one it arrived during); 0 when nothing held it up.
    blocked_until_ns: int = 0


class ModelScheduler:
    def __init__(self, engine: Engine, parallel: int = 1, default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> None:
        self.engine = engine
        self.default_keep_alive_s = default_keep_alive_s
        self._slots = asyncio.Semaphore(parallel) if parallel > 0 else None
        self._state = asyncio.Condition()
        self._resident: Resident | None = None
        self._active = 0
        self._reloads_waiting = 0  # requests waiting for in-flight work to end so they can reload
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_task: asyncio.Task[None] | None = None  # held so it is not garbage-collected
        self._expiry_generation = 0

    @property
    def resident(self) -> Resident | None:
        return self._resident

    def model_entry(self, tag: str) -> ModelEntry | None:
        return next((m for m in self.engine.models() if m.tag == tag), None)

    @asynccontextmanager
    async def admit(
        self, tag: str, runner_options: dict[str, Any], keep_alive_s: float | None
    ) -> AsyncIterator[Admission]:
        # As in Ollama: the model first (its wait and load are the request's load_duration),
        # then a generation slot (a wait in no duration but total_duration). A request holding
        # the model while it waits for a slot keeps a reload waiting, like Ollama's refCount.
        admission = await self._acquire_model(tag, runner_options, keep_alive_s)
        try:
            slot_ns = 0
            if self._slots is not None:
                queued = self._slots.locked()
                await self._slots.acquire()
                slot_ns = time.perf_counter_ns() if queued else 0
            try:
                admission.blocked_until_ns = max(admission.blocked_until_ns, slot_ns, admission.resident.loaded_ns)
                yield admission
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            await self._release()

    async def load_only(self, tag: str, runner_options: dict[str, Any], keep_alive_s: float | None) -> None:
        """The empty-prompt request: load (or refresh) the model. It generates nothing, so it
        takes the model but never waits for a generation slot."""
        await self._acquire_model(tag, runner_options, keep_alive_s)
        await self._release()

    async def unload_now(self, tag: str) -> None:
        """The empty-prompt request with keep_alive 0. As in Ollama, it answers at once: an idle
        model unloads now, a busy one as soon as its last request ends (see _release)."""
        async with self._state:
            resident = self._resident
            if resident is None or resident.tag != tag:
                return
            if self._active == 0:
                await self._unload_locked("keep_alive 0 request")
            else:
                resident.keep_alive_s = 0.0

    async def _acquire_model(self, tag: str, runner_options: dict[str, Any], keep_alive_s: float | None) -> Admission:
        waited_ns = 0
        wants_reload = False  # whether this request counts in self._reloads_waiting
        async with self._state:
            try:
                while True:
                    current = self._resident
                    fits = current is not None and current.tag == tag and current.runner_options == runner_options
                    if fits and wants_reload:
                        wants_reload = False  # another waiter loaded what this one wants
                        self._reloads_waiting -= 1
                        self._state.notify_all()  # requests held back by this one may go too
                    # Ollama schedules in arrival order: while a reload waits, later requests for
                    # the resident model queue behind it rather than keep that model busy.
                    if fits and self._reloads_waiting == 0:
                        assert current is not None
                        self._active += 1
                        self._cancel_expiry()
                        if keep_alive_s is not None:
                            current.keep_alive_s = keep_alive_s
                        return Admission(current, time.perf_counter_ns(), blocked_until_ns=waited_ns)
                    # A newcomer does not overtake reloads already waiting for this moment.
                    if not fits and self._active == 0 and (wants_reload or self._reloads_waiting == 0):
                        break
                    if not fits and not wants_reload:
                        wants_reload = True
                        self._reloads_waiting += 1
                    await self._state.wait()
                    waited_ns = time.perf_counter_ns()
            finally:
                if wants_reload:
                    self._reloads_waiting -= 1
                    self._state.notify_all()  # requests held back for this one may go now
            previous = self._resident
            if previous is not None:
                await self._unload_locked(
                    f"replaced by {tag}"
                    if previous.tag != tag
                    else f"runner options changed: {_changed(previous.runner_options, runner_options)}"
                )
            started = time.perf_counter_ns()
            handle = await self.engine.load(tag, runner_options)
            log.info(
                "loaded %s in %.1f ms (runner options %s)",
                tag,
                (time.perf_counter_ns() - started) / 1e6,
                runner_options or "default",
            )
            keep = self.default_keep_alive_s if keep_alive_s is None else keep_alive_s
            self._resident = Resident(tag, dict(runner_options), handle, keep, loaded_ns=time.perf_counter_ns())
            self._active += 1
            return Admission(self._resident, self._resident.loaded_ns)

    async def _release(self) -> None:
        """The keep_alive that counts is the one the resident model was last given (at admission)."""
        async with self._state:
            self._active -= 1
            resident = self._resident
            if resident is not None and self._active == 0:
                keep = resident.keep_alive_s
                if keep <= 0:
                    await self._unload_locked("keep_alive 0")
                elif math.isfinite(keep):
                    resident.expires_at_wall = time.time() + keep
                    self._expiry = asyncio.get_running_loop().call_later(
                        keep, self._on_expiry, resident, self._expiry_generation
                    )
            self._state.notify_all()

    def _on_expiry(self, resident: Resident, generation: int) -> None:
        self._expiry_task = asyncio.get_running_loop().create_task(self._expire(resident, generation))

    async def _expire(self, resident: Resident, generation: int) -> None:
        async with self._state:
            # A request admitted after this timer fired has cancelled it (a new generation).
            current = generation == self._expiry_generation
            if self._resident is resident and self._active == 0 and current:
                await self._unload_locked(f"keep_alive {resident.keep_alive_s:g} s expired")
            self._state.notify_all()

    async def _unload_locked(self, reason: str) -> None:
        self._cancel_expiry()
        resident, self._resident = self._resident, None
        if resident is not None:
            await self.engine.unload(resident.handle)
            log.info("unloaded %s (%s)", resident.tag, reason)

    def _cancel_expiry(self) -> None:
        self._expiry_generation += 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._resident is not None:
            self._resident.expires_at_wall = None

    async def shutdown(self) -> None:
        async with self._state:
            await self._unload_locked("server shutting down")

    def ps_expires_at(self, resident: Resident) -> str:
        """RFC 3339 expiry as /api/ps shows it; far future for "forever" or in use."""
        far_future = dt.datetime(2318, 1, 1, tzinfo=dt.UTC).timestamp()
        when = resident.expires_at_wall if resident.expires_at_wall is not None else time.time() + resident.keep_alive_s
        return dt.datetime.fromtimestamp(min(when, far_future), tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = sorted(set(before) | set(after))
    return ", ".join(f"{k} {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k))
