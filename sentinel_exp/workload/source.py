"""What each request of a run asks: its prompt, from `workload.prompts`, a prompts file, or
synthetic text of a target length in tokens (`workload.input_tokens`), with a nonce first when
`workload.unique_prompts` is set. When requests are sent is load.py's business.

Synthetic lengths are calibrated on the warmup: its requests alternate the drawn target and half
of it, so that two word counts fit count = overhead + per_word * words (synthetic.fit_length),
and the measured phase builds its prompts from that fit.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sentinel_exp.config.distributions import Distribution, parse_distribution
from sentinel_exp.workload.prompts_file import Prompt, read_prompts_file
from sentinel_exp.workload.synthetic import PRIOR, LengthFit, fit_length, nonce_prefix, synthetic_text

if TYPE_CHECKING:
    from sentinel_exp.config.schema import WorkloadConfig
    from sentinel_exp.records import RequestRecord


@dataclass(frozen=True)
class Planned:
    """One request's prompt as it goes to WireApi.build_request, and what it aimed at."""

    prompt_index: int
    text: str  # "" when `messages` carries the conversation
    messages: list[dict[str, Any]] | None
    system: str | None
    input_tokens_target: int | None = None
    words: int | None = None  # synthetic words in the prompt (the calibration's x)


class PromptSource:
    """Builds request `index`'s prompt (index runs on from warmup into the measured phase), and
    learns from warmup records how many tokens the server counts for synthetic text."""

    def __init__(self, workload: WorkloadConfig, run_token: str | None = None) -> None:
        self.seed = workload.seed
        self.system = workload.system
        self.unique = workload.unique_prompts
        # Random per run: a nonce must not repeat the one a previous run left in the server's cache.
        self.run_token = run_token if run_token is not None else secrets.token_hex(3)
        self.lengths: Distribution | None = None
        self.prompts: list[Prompt] = []
        if workload.input_tokens is not None:
            self.lengths = parse_distribution(workload.input_tokens)
        elif workload.prompts_file:
            self.prompts = read_prompts_file(workload.prompts_file)
        else:
            self.prompts = [Prompt(text=p) for p in workload.prompts]
        self.fit: LengthFit = PRIOR
        self._points: list[tuple[int, int]] = []
        self.warnings: list[str] = []
        if self.lengths is not None and workload.warmup == 0:
            self.warnings.append(
                "workload.input_tokens with workload.warmup=0: prompt lengths are a first estimate of one "
                "token a word, not calibrated against the server's count (give 2 or more warmup requests)"
            )

    def longest_prompt_tokens(self) -> tuple[int | None, list[str]]:
        """For the option lint before any request: a synthetic workload's largest target in tokens
        (the server's own count, once calibrated), else None and the texts whose length to estimate."""
        if self.lengths is not None:
            return math.ceil(self.lengths.typical_max()), []
        texts = [
            p.text if p.messages is None else " ".join(str(m.get("content") or "") for m in p.messages)
            for p in self.prompts
        ]
        return None, [t or "" for t in texts]

    def next(self, index: int, warmup: bool = False) -> Planned:
        if self.lengths is None:
            prompt_index = index % len(self.prompts)
            return self._with_nonce(index, prompt_index, self.prompts[prompt_index], None, None)
        rng = random.Random(f"{self.seed}:{index}")
        target = max(1, round(self.lengths.sample(rng)))
        if warmup and index % 2 == 1:
            target = max(1, target // 2)  # a second word count for the calibration's fit
        words = self.fit.words_for(target)
        return self._with_nonce(index, index, Prompt(text=synthetic_text(words, rng)), target, words)

    def observe(self, record: RequestRecord, planned: Planned) -> None:
        """A warmup record of a synthetic prompt: its server count refits the length model."""
        if planned.words is None or record.measured or not record.ok or not record.prompt_eval_count:
            return
        self._points.append((planned.words, record.prompt_eval_count))
        self.fit = fit_length(self._points)

    def _with_nonce(
        self, index: int, prompt_index: int, prompt: Prompt, target: int | None, words: int | None
    ) -> Planned:
        nonce = nonce_prefix(self.run_token, index) if self.unique else ""
        if prompt.messages is not None:
            messages = [dict(m) for m in prompt.messages]
            if self.system and messages[0].get("role") != "system":
                messages.insert(0, {"role": "system", "content": self.system})
            messages[0]["content"] = nonce + str(messages[0]["content"])
            return Planned(prompt_index, "", messages, None, target, words)
        text = prompt.text or ""
        # First in what the server sees: the system prompt when there is one.
        if self.system:
            return Planned(prompt_index, text, None, nonce + self.system, target, words)
        return Planned(prompt_index, nonce + text, None, None, target, words)
