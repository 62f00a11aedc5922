"""How many llama.cpp threads the embedded server runs when a request leaves num_thread unset:
read by its engine, and by the runner, which warns when a busy core can stall them all.

llama.cpp's threads spin at barriers, so one descheduled thread stalls all: on a shared box fewer
threads than cores is far more robust (2 threads on 2 cores with one core busy was measured ~50x
slower). THREADS_ENV sets the count; the default is every usable CPU.
"""

from __future__ import annotations

import os

THREADS_ENV = "SENTINEL_LLAMA_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on (cgroup/taskset aware, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def default_threads() -> int:
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else usable_cpus()
