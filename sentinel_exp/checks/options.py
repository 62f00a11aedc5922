"""Option lint: settings that make a run measure something other than what its author meant,
found before any request is sent (pure: the run gathers the facts, this module judges them).

Each rule is one function from a `LintInput` to a `Finding` or None; `RULES` is the table. A
finding is a warning (reason and fix) unless `lint=strict` makes it an error (experiment.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sentinel_exp import tags as tag
from sentinel_exp.serve.prompt_fit import DEFAULT_NUM_KEEP, prompt_limit
from sentinel_exp.serve.wire import runner_options

# Characters per token of English text for the usual BPE vocabularies: a rough estimate, used
# only before the server has counted the prompts itself.
CHARS_PER_TOKEN = 4
# Tokens a chat template adds around each message (role markers, end-of-turn).
TEMPLATE_TOKENS_PER_MESSAGE = 4
# A num_gpu this small is a layer count someone meant as "use the GPU".
SMALL_NUM_GPU = range(1, 5)


@dataclass(frozen=True)
class LintInput:
    """What the run would do, as plain facts."""

    options: Mapping[str, Any]  # the options the measured requests send
    warmup_options: Mapping[str, Any] | None = None  # what warmup sends; None = the same as `options`
    keep_alive_s: float | None = None  # how long the model stays loaded when idle; None = unknown
    keep_alive_source: str = "workload.keep_alive"  # where keep_alive_s came from, for the message
    idle_gap_s: float | None = None  # the workload's longest idle gap between requests; None = none
    physical_cores: int | None = None  # of the server's machine; None = unknown (a remote server)
    prompt_tokens: int | None = None  # the longest prompt in tokens; None = unknown
    tokens_estimated: bool = True  # prompt_tokens is an estimate from characters, not the server's count


@dataclass(frozen=True)
class Finding:
    rule: str
    reason: str
    fix: str

    @property
    def line(self) -> str:
        """The finding on one line: the warning, the tag value and the strict error."""
        return f"{self.reason}; fix: {self.fix}"

    @property
    def tag(self) -> str:
        return tag.lint(self.rule)


@dataclass(frozen=True)
class Findings:
    items: tuple[Finding, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        return [f.line for f in self.items]

    def tags(self) -> dict[str, str]:
        return {f.tag: f.line for f in self.items}


def _int_option(options: Mapping[str, Any], name: str) -> int | None:
    value = options.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def num_gpu_rule(given: LintInput) -> Finding | None:
    num_gpu = _int_option(given.options, "num_gpu")
    if num_gpu is None or num_gpu not in SMALL_NUM_GPU:
        return None
    return Finding(
        "num_gpu",
        f"num_gpu={num_gpu} offloads {num_gpu} layer{'s' if num_gpu > 1 else ''} to the GPU and runs the rest on "
        f"the CPU: num_gpu is a layer count, not 'use the GPU'",
        "leave num_gpu unset (the server decides), 0 for CPU only, or a layer count such as 99 for every layer",
    )


def num_ctx_rule(given: LintInput) -> Finding | None:
    num_ctx, tokens = _int_option(given.options, "num_ctx"), given.prompt_tokens
    if num_ctx is None or tokens is None:
        return None
    num_keep = _int_option(given.options, "num_keep")
    kept = prompt_limit(num_ctx, DEFAULT_NUM_KEEP if num_keep is None else num_keep)
    if given.tokens_estimated:
        # An estimate is judged against the window itself: it is too rough to judge finer.
        if tokens < num_ctx:
            return None
        how = f"about {tokens} tokens (an estimate from its characters)"
    else:
        # A truncated prompt comes back counted at what the server kept (prompt_fit.py), so a
        # count at that mark means truncation, or a prompt that leaves under half the window.
        if tokens < kept:
            return None
        how = f"{tokens} tokens (counted by the server in warmup)"
    return Finding(
        "num_ctx",
        f"the longest prompt is {how}, too long for num_ctx={num_ctx}: the server truncates a prompt over "
        f"about {kept} tokens, so the prefill measured is not the prompt's",
        f"raise num_ctx above twice the longest prompt (e.g. num_ctx={_next_power_of_two(2 * tokens)}) "
        f"or shorten the prompts",
    )


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def num_thread_rule(given: LintInput) -> Finding | None:
    num_thread = _int_option(given.options, "num_thread")
    cores = given.physical_cores
    if num_thread is None or cores is None or num_thread <= cores:
        return None
    return Finding(
        "num_thread",
        f"num_thread={num_thread} is more than the {cores} physical cores of the server's machine: the threads "
        f"contend for the cores and decoding slows down",
        f"num_thread={cores}, or leave it unset (the server uses the physical cores)",
    )


def num_batch_rule(given: LintInput) -> Finding | None:
    num_batch = _int_option(given.options, "num_batch")
    num_ctx = _int_option(given.options, "num_ctx")
    if num_batch is None or num_ctx is None or num_batch <= num_ctx:
        return None
    return Finding(
        "num_batch",
        f"num_batch={num_batch} is larger than num_ctx={num_ctx}: a batch never holds more than the context, "
        f"so the setting does not do what it says",
        f"num_batch={num_ctx} or less",
    )


def runner_reload_rule(given: LintInput) -> Finding | None:
    if given.warmup_options is None:
        return None
    warmup, measured = runner_options(dict(given.warmup_options)), runner_options(dict(given.options))
    differ = [name for name in measured if warmup[name] != measured[name]]
    if not differ:
        return None
    return Finding(
        "runner_reload",
        f"the runner options {', '.join(differ)} differ between warmup and the measured phase: the server reloads "
        f"the model inside the measurement",
        "send the same runner options (num_ctx, num_batch, num_gpu, main_gpu, num_thread, use_mmap) in both phases",
    )


def seconds(value: float) -> str:
    """`2.3 s`, `0.05 s`, `1,800 s`: a duration as a person reads it (a gap computed from a rate or a
    distribution has digits nobody set)."""
    return f"{value:,.2f}".rstrip("0").rstrip(".") + " s"


def keep_alive_rule(given: LintInput) -> Finding | None:
    keep, gap = given.keep_alive_s, given.idle_gap_s
    if keep is None or gap is None or math.isinf(keep) or keep >= gap:
        return None
    return Finding(
        "keep_alive",
        f"keep_alive of {seconds(keep)} ({given.keep_alive_source}) is shorter than the workload's longest idle gap "
        f"of {seconds(gap)}: the model unloads in the gap and the next request pays a cold load",
        f"workload.keep_alive={math.ceil(gap * 1.5)} (longer than the gap), or -1 to keep the model loaded",
    )


Rule = Callable[[LintInput], Finding | None]
RULES: tuple[tuple[str, Rule], ...] = (
    ("num_gpu", num_gpu_rule),
    ("num_ctx", num_ctx_rule),
    ("num_thread", num_thread_rule),
    ("num_batch", num_batch_rule),
    ("runner_reload", runner_reload_rule),
    ("keep_alive", keep_alive_rule),
)


def lint(given: LintInput, rules: Iterable[tuple[str, Rule]] = RULES) -> Findings:
    """Every finding of `rules` (all of them by default), in table order."""
    found = (rule(given) for _, rule in rules)
    return Findings(tuple(f for f in found if f is not None))


def rules_named(*names: str) -> tuple[tuple[str, Rule], ...]:
    """Part of the table, e.g. the num_ctx rule again once the server has counted the prompts."""
    return tuple((name, rule) for name, rule in RULES if name in names)


def estimated_prompt_tokens(prompts: Iterable[str], system: str | None) -> int:
    """The longest prompt in tokens, estimated from characters (system prompt and template included)."""
    messages = 2 if system else 1
    system_chars = len(system or "")
    longest = max((len(p) for p in prompts), default=0)
    return math.ceil((longest + system_chars) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS_PER_MESSAGE * messages


def counted_prompt_tokens(counts: Iterable[int | None]) -> int | None:
    """The longest prompt as the server counted it (prompt_eval_count), or None where it counted none."""
    known = [c for c in counts if c is not None]
    return max(known) if known else None
