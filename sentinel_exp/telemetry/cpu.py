"""Host CPU/memory and server process-tree probes (psutil only)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

import psutil

_MB = 1024.0 * 1024.0
# Errors that mean "this process is gone or not ours to read": skip it, never fail the sample.
_PROC_ERRORS = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError)


class CpuReading(NamedTuple):
    cpu_pct: float  # whole machine, 0..100
    cpu_pct_max_core: float  # busiest single core, 0..100


class MemoryReading(NamedTuple):
    mem_used_mb: float  # total - available, i.e. what the OS cannot hand out without swapping
    mem_pct: float


class ProcessTreeReading(NamedTuple):
    cpu_pct: float | None  # summed over the tree; 100 = one full core; None on the priming read
    rss_mb: float
    n_procs: int


def _busy_and_total(t: tuple[float, ...]) -> tuple[float, float]:
    # Same accounting as psutil.cpu_percent: guest time is already inside user/nice on Linux,
    # and iowait is idle time from the CPU's point of view. Fields vary by OS: use getattr.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = getattr(t, "idle", 0.0) + getattr(t, "iowait", 0.0)
    return total - idle, total


class SystemProbe:
    """System-wide CPU % (from our own /proc/stat deltas) and memory.

    Keeps its own baseline instead of psutil.cpu_percent(interval=None) because that shares
    module-global state with any other caller in the process (e.g. MLflow system metrics).
    """

    def __init__(self) -> None:
        self._prev: list[tuple[float, float]] | None = None

    def read_cpu(self) -> CpuReading | None:
        """CPU use since the previous call; None on the first (priming) call."""
        now = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
        prev, self._prev = self._prev, now
        if prev is None or len(prev) != len(now):  # first call, or CPU hotplug
            return None
        per_core: list[float] = []
        busy_sum = total_sum = 0.0
        for (b0, t0), (b1, t1) in zip(prev, now, strict=False):
            db, dt = max(0.0, b1 - b0), max(0.0, t1 - t0)
            busy_sum += db
            total_sum += dt
            per_core.append(min(100.0, 100.0 * db / dt) if dt > 0 else 0.0)
        overall = min(100.0, 100.0 * busy_sum / total_sum) if total_sum > 0 else 0.0
        # Rounded: differencing large cumulative counters leaves ~1e-10 float noise.
        return CpuReading(round(overall, 3), round(max(per_core, default=0.0), 3))

    @staticmethod
    def read_memory() -> MemoryReading:
        vm = psutil.virtual_memory()
        return MemoryReading((vm.total - vm.available) / _MB, float(vm.percent))


class OwnProcessProbe:
    """CPU % of this process (the load generator, its clients and this sampler); 100 = one core.

    Python's client code runs on one core at a time, so near 100 the load generator itself is
    the bottleneck and its queueing is inside the latencies it reports.
    """

    def __init__(self) -> None:
        self._prev: tuple[float, float] | None = None

    def read(self) -> float | None:
        """Since the previous call; None on the first (priming) call."""
        now = (time.process_time(), time.monotonic())
        prev, self._prev = self._prev, now
        if prev is None or now[1] <= prev[1]:
            return None
        return round(100.0 * max(0.0, now[0] - prev[0]) / (now[1] - prev[1]), 3)


class _Stat(NamedTuple):
    ppid: int
    start: int  # clock ticks after boot; with pid, identifies a process across pid reuse
    cpu_s: float
    rss_b: int
    zombie: bool


FIRST_DISCOVERY_WAIT_MAX_S = 0.5
_PROC_STAT_OK = os.path.exists("/proc/self/stat")
_TICK = os.sysconf("SC_CLK_TCK") if _PROC_STAT_OK else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if _PROC_STAT_OK else 4096


def _read_stat(pid: int | str) -> _Stat | None:
    # Raw os.open/os.read: about twice as fast as psutil's per-process path, which matters
    # because discovery reads this file for every process on the host.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        f = data[data.rfind(b")") + 2 :].split()  # comm may contain spaces and parens
        return _Stat(
            int(f[1]),
            int(f[19]),
            (int(f[11]) + int(f[12])) / _TICK,
            int(f[21]) * _PAGE,
            f[0] == b"Z",
        )
    except (OSError, ValueError, IndexError):
        return None  # vanished between listing and reading, or not ours to read


def _scan_proc() -> dict[int, _Stat]:
    out: dict[int, _Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(name)
            if st is not None:
                out[int(name)] = st
    return out


class ProcessTreeProbe:
    """CPU % and RSS of a process plus all its descendants (e.g. `ollama serve` + its runners).

    Finding descendants means reading /proc/<pid>/stat for *every* process on the host
    (~1 ms with 75 processes on a small VM, i.e. ~1% of a core if done at 10 Hz), so full
    re-discovery is metered: after each scan the next one waits long enough to keep scanning
    under `discovery_budget` of one core (0.002 → a rescan every ~0.5 s there). Between scans
    only the known members are re-read. A child found late loses no CPU time (see
    `_cpu_delta`). `discovery_budget=None` re-discovers on every read.
    Linux reads /proc directly (twice as fast as psutil); elsewhere psutil is used.
    """

    def __init__(
        self,
        pid: int,
        *,
        discovery_budget: float | None = 0.002,
        clock: Callable[[], float] = time.monotonic,
        use_procfs: bool | None = None,
    ) -> None:
        self.pid = pid
        self._budget = discovery_budget
        self._clock = clock
        self._procfs = _PROC_STAT_OK if use_procfs is None else use_procfs
        self._boot = psutil.boot_time()
        self._members: dict[int, psutil.Process | None] = {}
        self._cpu_prev: dict[tuple[int, float], float] = {}
        self._last_t: float | None = None
        self._next_discovery = float("-inf")
        self.discoveries = 0

    def read(self) -> ProcessTreeReading | None:
        """None when the root process is gone (or was never readable)."""
        now = self._clock()
        discover = now >= self._next_discovery
        c0 = time.thread_time()
        procs = self._read_procfs(discover) if self._procfs else self._read_psutil(discover)
        if discover:
            self.discoveries += 1
            cost = time.thread_time() - c0  # an upper bound: includes the member reads
            wait = cost / self._budget if self._budget else 0.0
            if self.discoveries == 1:
                # The first scan runs on cold caches and can cost ten times the rest: it must not
                # leave a new child unseen for seconds. Later scans keep to the budget.
                wait = min(wait, FIRST_DISCOVERY_WAIT_MAX_S)
            self._next_discovery = now + wait
        if procs is None:
            self._members.clear()
            return None
        dt = None if self._last_t is None else now - self._last_t
        wall = time.time()
        cpu_delta, rss, seen = 0.0, 0, {}
        for key, cpu_s, rss_b, born in procs:
            seen[key] = cpu_s
            rss += rss_b
            cpu_delta += self._cpu_delta(key, cpu_s, born, wall, dt)
        self._cpu_prev = seen
        self._last_t = now
        pct = None if not dt or dt <= 0 else 100.0 * cpu_delta / dt
        return ProcessTreeReading(pct, rss / _MB, len(seen))

    def _cpu_delta(self, key: tuple[int, float], cpu_s: float, born: float, wall: float, dt: float | None) -> float:
        prev = self._cpu_prev.get(key)
        if prev is not None:
            return max(0.0, cpu_s - prev)
        if dt is None:
            return 0.0  # priming read: no interval yet
        # First sight. Born within the interval: all its CPU time is ours. Born earlier (seen
        # late because discovery backed off): assume a uniform rate since birth, take our share.
        age = wall - born
        return cpu_s if age <= dt else cpu_s * dt / age

    # Each backend returns [((pid, start), cpu_seconds, rss_bytes, birth_wall_time)], or None
    # when the root is gone.
    def _read_procfs(self, discover: bool) -> list[tuple[tuple[int, float], float, int, float]] | None:
        if discover:
            table = _scan_proc()
            kids: dict[int, list[int]] = {}
            for pid, st in table.items():
                kids.setdefault(st.ppid, []).append(pid)
            members, todo = [], [self.pid]
            while todo:  # BFS over the ppid links
                pid = todo.pop()
                members.append(pid)
                todo.extend(kids.get(pid, ()))
            self._members = dict.fromkeys(members)
            stats = {pid: table.get(pid) for pid in members}
        else:
            stats = {pid: _read_stat(pid) for pid in self._members}
        root = stats.get(self.pid)
        if root is None or root.zombie:  # an unreaped dead server is gone for us
            return None
        return [
            ((pid, st.start), st.cpu_s, st.rss_b, self._boot + st.start / _TICK)
            for pid, st in stats.items()
            if st is not None
        ]

    def _read_psutil(self, discover: bool) -> list[tuple[tuple[int, float], float, int, float]] | None:
        if discover:
            try:
                root = self._members.get(self.pid) or psutil.Process(self.pid)
                self._members = {
                    self.pid: root,
                    **{p.pid: p for p in root.children(recursive=True)},
                }
            except _PROC_ERRORS:
                return None
        if self.pid not in self._members:
            return None
        out = []
        for pid, proc in list(self._members.items()):
            try:
                assert proc is not None
                with proc.oneshot():
                    if pid == self.pid and proc.status() == psutil.STATUS_ZOMBIE:
                        return None
                    ct, mem, born = proc.cpu_times(), proc.memory_info(), proc.create_time()
            except _PROC_ERRORS:
                self._members.pop(pid, None)
                if pid == self.pid:
                    return None
                continue
            out.append(((pid, born), ct.user + ct.system, mem.rss, born))
        return out


def _listening_pid_system_wide(port: int) -> int | None:
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    return None


def _listening_pid_by_process(port: int) -> int | None:
    for proc in psutil.process_iter():
        try:
            conns = (
                proc.net_connections(kind="tcp")
                if hasattr(proc, "net_connections")
                else proc.connections(kind="tcp")  # psutil < 6
            )
        except _PROC_ERRORS:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                return proc.pid
    return None


def _pid_by_name(name: str) -> int | None:
    want = name.lower()
    matches: dict[int, int] = {}  # pid -> ppid
    for proc in psutil.process_iter(["name", "exe", "ppid"]):
        info = proc.info
        names = {(info.get("name") or "").lower()}
        exe = info.get("exe") or ""
        if exe:
            names.add(exe.replace("\\", "/").rsplit("/", 1)[-1].lower())
        if want in names or any(n.startswith(want + ".") for n in names):  # "ollama.exe"
            matches[proc.pid] = info.get("ppid") or 0
    # `ollama serve` spawns `ollama runner` children with the same name: prefer the root.
    roots = sorted(pid for pid, ppid in matches.items() if ppid not in matches)
    return roots[0] if roots else None


def find_server_pid(port: int | None, name: str | None = "ollama") -> int | None:
    """PID of the process listening on TCP `port`, else of a process called `name`.

    Never raises: returns None when nothing is found or the OS refuses to tell.
    """
    if port is not None:
        # System-wide listing needs privileges on macOS and hides other users' pids on
        # Linux; the per-process scan then still finds our own children.
        for finder in (_listening_pid_system_wide, _listening_pid_by_process):
            try:
                pid = finder(port)
            except (psutil.Error, OSError):
                pid = None
            if pid:
                return pid
    if name:
        try:
            return _pid_by_name(name)
        except (psutil.Error, OSError):
            return None
    return None
