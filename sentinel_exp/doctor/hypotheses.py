"""What could make the baseline slow, and how to find out (pure): one hypothesis per cause, drawn
from the evidence. Each is to be tested (with the study that would confirm or refute it: the
candidate fixes as overrides, the metric that decides, the requests per arm), skipped (the
evidence rules it out, and says how), or not testable here (and why). A fix that needs what the
tool cannot change (another model, another machine, the server's own settings) is named, not run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sentinel_exp.analysis.comparison import MIN_REQUESTS
from sentinel_exp.analysis.diagnosis import PartName
from sentinel_exp.config.schema import DiagnoseConfig
from sentinel_exp.doctor.evidence import Evidence
from sentinel_exp.sweep.design import REQUESTS_PER_STREAM

# Rounds a study's planned requests make at least: fewer give wide intervals (comparison.FEW_CLUSTERS).
MIN_ROUNDS = 5
# A num_ctx candidate never goes below this: a window that tight leaves no room for a real chat.
MIN_NUM_CTX = 256
# A layer count that puts every layer of the usual models on the GPU.
ALL_LAYERS = 99
# Answers shorter than this are not shortened further by a num_predict candidate.
MIN_ANSWER_TOKENS = 4


class Cause(StrEnum):
    LOAD = "load"
    PREFILL = "prefill"
    CONTEXT = "num_ctx"
    QUEUE = "queue"
    THREADS = "num_thread"
    GPU = "gpu"
    DECODE = "decode"
    LINT = "lint"


TITLES: dict[Cause, str] = {
    Cause.LOAD: "model load and cold starts",
    Cause.PREFILL: "prefill of long prompts",
    Cause.CONTEXT: "context size (num_ctx)",
    Cause.QUEUE: "queueing for the server's slots",
    Cause.THREADS: "CPU threads (num_thread)",
    Cause.GPU: "GPU offload (num_gpu, placement)",
    Cause.DECODE: "slow decode and long answers",
    Cause.LINT: "the option lint's other findings",
}
# The seed user's four hypotheses, answered by name whichever the cause turns out to be.
SEED_NAMES: dict[Cause, str] = {
    Cause.LOAD: "cold start and keep_alive",
    Cause.CONTEXT: "context size",
    Cause.GPU: "GPU offload",
    Cause.THREADS: "CPU threads",
}
# Which latency, and which part of it, each cause would show in.
PARTS: dict[Cause, tuple[str, PartName]] = {
    Cause.LOAD: ("ttft", PartName.LOAD),
    Cause.PREFILL: ("ttft", PartName.PREFILL),
    Cause.CONTEXT: ("ttft", PartName.PREFILL),
    Cause.QUEUE: ("ttft", PartName.QUEUE),
    Cause.THREADS: ("e2e", PartName.DECODE),
    Cause.GPU: ("e2e", PartName.DECODE),
    Cause.DECODE: ("e2e", PartName.DECODE),
}


class Lever(StrEnum):
    FIX = "fix"  # the same work, run differently: keep_alive, num_thread, num_gpu, num_ctx, slots
    TRADE = "trade"  # different work: shorter prompts or answers, fewer requests at once
    PROBE = "probe"  # measures a cost, fixes nothing: the deliberate cold run


class Status(StrEnum):
    TEST = "to test"
    SKIPPED = "skipped"
    NOT_TESTABLE = "not testable here"
    CONFIRMED = "confirmed"
    REFUTED = "refuted"
    UNDECIDED = "undecided"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class Candidate:
    label: str  # as the report names it: "keep_alive=-1"
    overrides: tuple[str, ...]  # on top of the configuration as given
    lever: Lever
    value: float | None = None  # its place on a ladder's axis

    @property
    def recommended(self) -> bool:
        """Whether a confirmed candidate belongs in the recommended configuration: a fix does; a
        trade changes the work (the prompts, the answers, the load), which is the user's to choose."""
        return self.lever == Lever.FIX


@dataclass(frozen=True)
class Study:
    """The interleaved study that tests a hypothesis: the configuration as given against each candidate."""

    objective: str  # the metric that decides (sweep.objective of the study)
    candidates: tuple[Candidate, ...]
    requests: int  # measured requests per arm
    axis: str | None = None  # a ladder's axis ("prompt tokens"); None: no ladder
    given_value: float | None = None  # the configuration as given on that axis
    whole_answers: bool = False  # E2E compared as whole answers, though the candidates shorten them


@dataclass(frozen=True)
class Hypothesis:
    cause: Cause
    status: Status
    evidence: str  # what the baseline says of it: why it is tested, or why not
    study: Study | None = None
    named: tuple[str, ...] = ()  # fixes named, not run: they need what the tool cannot change
    share: float = 0.0  # its part's share of the latency it shows in: orders the studies

    @property
    def title(self) -> str:
        return TITLES[self.cause]


def seconds_text(seconds: float) -> str:
    """A duration as a person says it: 0.3 s, 12 s, 6 min, forever."""
    if math.isinf(seconds):
        return "forever"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    if seconds >= 10:
        return f"{seconds:.0f} s"
    return f"{seconds:.2g} s"


def arm_requests(evidence: Evidence) -> int:
    """Measured requests per arm: the workload's, but enough for MIN_ROUNDS rounds of full blocks
    and for the comparison's MIN_REQUESTS."""
    f = evidence.facts
    streams = f.concurrency if f.rate is None else 1
    return max(f.requests, MIN_REQUESTS, REQUESTS_PER_STREAM * streams * MIN_ROUNDS)


def _skip(cause: Cause, why: str, share: float = 0.0, named: tuple[str, ...] = ()) -> Hypothesis:
    return Hypothesis(cause, Status.SKIPPED, why, share=share, named=named)


def _untestable(cause: Cause, why: str, named: tuple[str, ...] = ()) -> Hypothesis:
    return Hypothesis(cause, Status.NOT_TESTABLE, why, named=named)


NO_DURATIONS = "the server reports no durations (OpenAI API), so load, queueing and prefill are not told apart"


def load_evidence(e: Evidence) -> str:
    """`9 of 30 requests were cold: idle gaps of 6 min exceed keep_alive 5 min`."""
    f = e.facts
    cold = f"{e.cold} of {e.ok} requests were cold"
    gap, keep = seconds_text(f.idle_gap_s), seconds_text(f.keep_alive_s)
    if f.idle_gap_s > f.keep_alive_s:
        return f"{cold}: idle gaps of {gap} exceed keep_alive {keep}"
    if f.idle_gap_s > 0:
        return f"{cold}; idle gaps of up to {gap} within keep_alive {keep}"
    return f"{cold}; no idle gaps, keep_alive {keep}"


def load_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """Cold starts: keep_alive against the idle gaps (a fix), and a deliberate cold run (a probe of
    what a cold start costs) where the tool starts the server and can give the run its own."""
    f, share = e.facts, e.share("ttft", PartName.LOAD)
    if not e.server_durations:
        return _untestable(Cause.LOAD, NO_DURATIONS)
    if e.cold == 0 and "keep_alive" not in f.lint:
        return _skip(Cause.LOAD, f"{load_evidence(e)}: model load is {share:.0%} of TTFT")
    evidence = load_evidence(e)
    if math.isinf(f.keep_alive_s):
        why = f"{evidence}, with keep_alive forever: another client loads other models or runner options"
        return _untestable(Cause.LOAD, why, ("a server that nothing else uses",))
    candidates = [Candidate("keep_alive=-1", ("workload.keep_alive=-1",), Lever.FIX)]
    if f.server_kind in ("simulated", "embedded"):
        # keep_alive 0 unloads after every request: each one is cold, on a server of its own.
        candidates.append(Candidate("cold run (keep_alive=0)", ("workload.keep_alive=0",), Lever.PROBE))
    # The cause shows at the percentile that the cold requests reach.
    objective = "ttft_ms_p50" if e.cold * 2 >= e.ok else "ttft_ms_p95"
    study = Study(objective, tuple(candidates), arm_requests(e))
    return Hypothesis(Cause.LOAD, Status.TEST, evidence, study, share=share)


def prefill_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """Long prompts: a ladder of synthetic prompts at the baseline's length, half and a quarter of
    it, which fits the prefill rate. Shorter prompts are the user's to write: a trade."""
    share = e.share("ttft", PartName.PREFILL)
    if not e.server_durations or e.prompt_tokens is None:
        return _untestable(Cause.PREFILL, NO_DURATIONS)
    tokens = e.prompt_tokens
    if share < s.min_share:
        return _skip(Cause.PREFILL, f"prefill is {share:.0%} of TTFT (under diagnose.min_share={s.min_share:g})", share)
    if tokens < s.long_prompt_tokens:
        why = (
            f"prompts are short ({tokens:.0f} tokens on average, under diagnose.long_prompt_tokens="
            f"{s.long_prompt_tokens}): prefill's {share:.0%} of TTFT is the server's fixed cost of a first token"
        )
        return _skip(Cause.PREFILL, why, share)
    given = round(tokens)
    rungs = sorted({given, given // 2, given // 4} - {0}, reverse=True)
    if e.facts.input_tokens == given:
        rungs.remove(given)  # the configuration as given is that rung already
    candidates = tuple(
        Candidate(
            f"prompts of {n} tokens",
            (f"workload.input_tokens={n}", "workload.prompts_file=null"),
            Lever.TRADE,
            float(n),
        )
        for n in rungs
    )
    evidence = f"prompts of {tokens:.0f} tokens on average"
    study = Study("ttft_ms_p50", candidates, arm_requests(e), axis="prompt tokens", given_value=tokens)
    return Hypothesis(Cause.PREFILL, Status.TEST, evidence, study, share=share)


def fitting_num_ctx(longest_prompt: int, longest_output: int) -> int:
    """The smallest power of two that holds twice the longest prompt (Ollama's truncation keeps
    about half the window: checks/options.py) and the prompt with its answer, at least MIN_NUM_CTX."""
    need = max(2 * longest_prompt, longest_prompt + longest_output, MIN_NUM_CTX)
    return 1 << (need - 1).bit_length()


# The context window a llama.cpp server uses when a run sends no num_ctx, where it is known.
DEFAULT_NUM_CTX = {"embedded": 2048}


def context_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """A context window larger than the prompts need: the seed's proposal cut num_ctx 2048 -> 512."""
    f = e.facts
    if not f.runner_options:
        return _untestable(Cause.CONTEXT, _no_runner_options(f.server_kind, "num_ctx"))
    if e.longest_prompt is None:
        return _untestable(Cause.CONTEXT, "the server counted no prompt tokens")
    sent = f.options.get("num_ctx")
    current = sent if isinstance(sent, int) else DEFAULT_NUM_CTX.get(f.server_kind)
    if current is None:
        return _skip(Cause.CONTEXT, "num_ctx is not sent, so Ollama's own default applies (it depends on its version)")
    fits = fitting_num_ctx(e.longest_prompt, e.longest_output or 0)
    window = f"num_ctx={current}{'' if isinstance(sent, int) else ' (the default)'}"
    if current <= fits:
        why = f"{window} is no larger than the prompts need ({fits}: the longest prompt is {e.longest_prompt} tokens)"
        return _skip(Cause.CONTEXT, why)
    evidence = f"{window} is larger than the prompts need ({fits}: the longest prompt is {e.longest_prompt} tokens)"
    candidate = Candidate(f"num_ctx={fits}", (f"options.num_ctx={fits}",), Lever.FIX, float(fits))
    study = Study("ttft_ms_p50", (candidate,), arm_requests(e))
    # No part of the latency is seen to come from the window itself: studied after the causes seen.
    return Hypothesis(Cause.CONTEXT, Status.TEST, evidence, study)


def _no_runner_options(kind: str, option: str) -> str:
    if kind == "simulated":
        return f"the simulated server models no runner options: {option} changes nothing there"
    return f"an OpenAI-compatible server is sent no Ollama options: {option} cannot be set through it"


def _lower_values(given: int, *wanted: int | None) -> list[int]:
    """The distinct values below `given` (and at least 1), largest first."""
    return sorted({v for v in wanted if v is not None and 1 <= v < given}, reverse=True)


def queue_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """Requests waiting for a generation slot: a ladder of fewer requests at once (or a lower
    arrival rate), and more slots where the tool starts the server."""
    f, share = e.facts, e.share("ttft", PartName.QUEUE)
    if not e.server_durations:
        return _untestable(Cause.QUEUE, NO_DURATIONS)
    slots = "unlimited" if f.slots == 0 else "unknown" if f.slots is None else str(f.slots)
    load = f"{f.rate:g} requests/s" if f.rate is not None else f"{f.concurrency} at once"
    evidence = f"{load}, {slots} generation slot{'' if f.slots == 1 else 's'}"
    if share < s.min_share:
        return _skip(Cause.QUEUE, f"queueing is {share:.0%} of TTFT ({evidence}): requests found a free slot", share)
    candidates, named = _queue_candidates(e)
    if not candidates:
        return _untestable(Cause.QUEUE, f"{evidence}, with one request at a time", named)
    axis = "requests/s" if f.rate is not None else "concurrency"
    given = f.rate if f.rate is not None else float(f.concurrency)
    study = Study("ttft_ms_p50", tuple(candidates), arm_requests(e), axis=axis, given_value=given)
    return Hypothesis(Cause.QUEUE, Status.TEST, evidence, study, named=named, share=share)


def _queue_candidates(e: Evidence) -> tuple[list[Candidate], tuple[str, ...]]:
    f = e.facts
    candidates: list[Candidate] = []
    if f.rate is not None:
        for factor in (2, 4):
            rate = round(f.rate / factor, 3)
            candidates.append(Candidate(f"rate={rate:g}", (f"workload.rate={rate:g}",), Lever.TRADE, rate))
    else:
        slot_count = f.slots if f.slots else None
        for n in _lower_values(f.concurrency, slot_count, f.concurrency // 2, 1):
            candidates.append(Candidate(f"concurrency={n}", (f"workload.concurrency={n}",), Lever.TRADE, float(n)))
    wanted = f.concurrency if f.rate is None else max(2, (f.slots or 1) * 2)
    named: tuple[str, ...] = ()
    if f.server_kind == "simulated" and f.slots:
        candidates.append(Candidate(f"parallel={wanted}", (f"server.sim.parallel={wanted}",), Lever.FIX))
    elif f.server_kind == "ollama":
        named = (f"more generation slots: OLLAMA_NUM_PARALLEL={wanted} in the Ollama server's environment",)
    elif f.server_kind == "embedded":
        named = ("more generation slots: the embedded server has one, as Ollama's default; Ollama can have more",)
    return candidates, named


def threads_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """A llama.cpp server with more threads than the cores left free: its threads wait for each
    other at every step. The candidate: num_thread at the cores the threads can have to themselves,
    the free ones and at most the physical ones (one candidate: a second would halve each one's
    share of the 5%, and a count between the two stalls as the given one does)."""
    f = e.facts
    if not f.runner_options:
        return _untestable(Cause.THREADS, _no_runner_options(f.server_kind, "num_thread"))
    if not f.local or f.threads is None or e.free_cores is None:
        return _untestable(Cause.THREADS, "the server runs on another host: its free cores are unknown here")
    busy = "" if e.busy_cores is None else f", {e.busy_cores:.1f} of them busy with other processes"
    evidence = f"{f.threads} llama.cpp threads on {f.logical_cpus} cores{busy} ({e.free_cores} free)"
    # llama.cpp's threads each want a core of their own: a hyperthread's sibling is no such core.
    own = min(e.free_cores, f.physical_cores or e.free_cores)
    if f.threads <= own and "num_thread" not in f.lint:
        return _skip(Cause.THREADS, f"{evidence}: no more threads than free cores (at most the physical ones)")
    values = _lower_values(f.threads, own)
    if not values:
        return _skip(Cause.THREADS, f"{evidence}: one thread already")
    candidates = tuple(Candidate(f"num_thread={n}", (f"options.num_thread={n}",), Lever.FIX, float(n)) for n in values)
    study = Study("e2e_ms_p50", candidates, arm_requests(e), axis="num_thread", given_value=float(f.threads))
    return Hypothesis(Cause.THREADS, Status.TEST, evidence, study, share=e.share("e2e", PartName.DECODE))


def gpu_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """Layers left off the GPU: num_gpu as a small layer count (the lint), or a partial placement."""
    f = e.facts
    named = ("a machine with a GPU",)
    if not f.runner_options:
        return _untestable(Cause.GPU, _no_runner_options(f.server_kind, "num_gpu"), named)
    if not f.local or f.gpu_count is None:
        return _untestable(Cause.GPU, "the server runs on another host: its GPUs are not seen from here")
    if f.gpu_count == 0:
        expected = "; the hardware profile expects one (hardware.expect_gpu=true)" if f.expect_gpu else ""
        return _untestable(Cause.GPU, f"no GPU on this machine (NVML finds none){expected}", named)
    num_gpu = f.options.get("num_gpu")
    fraction = e.gpu_fraction
    candidates = []
    if "num_gpu" in f.lint:
        candidates.append(Candidate("num_gpu unset", ("options.num_gpu=null",), Lever.FIX))
    if fraction is not None and fraction < 1 and num_gpu != ALL_LAYERS:
        candidates.append(Candidate(f"num_gpu={ALL_LAYERS}", (f"options.num_gpu={ALL_LAYERS}",), Lever.FIX))
    placed = "unknown" if fraction is None else f"{fraction:.0%}"
    sent = "unset" if num_gpu is None else str(num_gpu)
    evidence = f"{f.gpu_count} GPU(s), the model {placed} on the GPU, num_gpu={sent}"
    if not candidates:
        return _skip(Cause.GPU, f"{evidence}: nothing left off the GPU")
    study = Study("e2e_ms_p50", tuple(candidates), arm_requests(e))
    return Hypothesis(Cause.GPU, Status.TEST, evidence, study, share=e.share("e2e", PartName.DECODE))


def decode_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """A decode slower than diagnose.slow_decode_tokens_per_s: shorter answers are measured (a
    trade, num_predict); a faster decode needs the threads or GPU above, or a smaller model."""
    rate, share = e.decode_tokens_per_s, e.share("e2e", PartName.DECODE)
    named = ("a smaller or more quantized model (model=...)", "a faster machine or a GPU")
    if rate is None or e.output_tokens is None:
        return _untestable(Cause.DECODE, "no request produced two tokens or more")
    evidence = f"decode runs at {rate:.1f} tokens/s per request, {e.output_tokens:.0f} tokens an answer"
    if rate >= s.slow_decode_tokens_per_s:
        limit = f"diagnose.slow_decode_tokens_per_s={s.slow_decode_tokens_per_s:g}"
        return _skip(Cause.DECODE, f"{evidence}: not slow ({limit})", share)
    if share < s.min_share:
        return _skip(Cause.DECODE, f"{evidence}, {share:.0%} of E2E: under diagnose.min_share={s.min_share:g}", share)
    if e.output_tokens < MIN_ANSWER_TOKENS:
        return _untestable(Cause.DECODE, f"{evidence}: the answers are short already", named)
    cap = max(1, round(e.output_tokens / 2))
    candidate = Candidate(f"num_predict={cap}", (f"options.num_predict={cap}",), Lever.TRADE, float(cap))
    study = Study("e2e_ms_p50", (candidate,), arm_requests(e), whole_answers=True)
    return Hypothesis(Cause.DECODE, Status.TEST, evidence, study, named=named, share=share)


# Lint rules whose cause has a hypothesis of its own.
COVERED_RULES = frozenset({"keep_alive", "num_thread", "num_gpu"})


def lint_hypothesis(e: Evidence, s: DiagnoseConfig) -> Hypothesis:
    """The lint's findings that no hypothesis above tests: each listed with its fix."""
    lint = e.facts.lint
    if not lint:
        return _skip(Cause.LINT, "the option lint found nothing")
    rest = {rule: line for rule, line in lint.items() if rule not in COVERED_RULES}
    if not rest:
        return _skip(Cause.LINT, f"its findings ({', '.join(sorted(lint))}) are tested above")
    lines = "; ".join(f"{rule}: {line}" for rule, line in rest.items())
    return _skip(Cause.LINT, f"not latency causes, fix them all the same: {lines}")


PLANNERS = (
    load_hypothesis,
    prefill_hypothesis,
    context_hypothesis,
    queue_hypothesis,
    threads_hypothesis,
    gpu_hypothesis,
    decode_hypothesis,
    lint_hypothesis,
)


def plan(evidence: Evidence, settings: DiagnoseConfig) -> list[Hypothesis]:
    """Every hypothesis, in a fixed order, each with its status and evidence."""
    return [planner(evidence, settings) for planner in PLANNERS]


def to_test(hypotheses: Sequence[Hypothesis]) -> list[Hypothesis]:
    """The hypotheses to test, the most likely (the largest part of the latency) first."""
    return sorted((h for h in hypotheses if h.status == Status.TEST), key=lambda h: -h.share)


def family_size(hypotheses: Sequence[Hypothesis]) -> int:
    """Candidates compared in all: the verdicts' alpha is split among them (Bonferroni), so that
    all of them together find a false improvement at most 5% of the time."""
    return max(1, sum(len(h.study.candidates) for h in hypotheses if h.study is not None and h.status == Status.TEST))
