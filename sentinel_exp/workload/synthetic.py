"""Synthetic prompts of a target input length in tokens, calibrated against the server's own count,
and the nonce that keeps a prompt out of the server's prompt cache. Pure: no I/O.

The client has no tokenizer of the server's model, so a prompt is built from words and the
server's count (Ollama's prompt_eval_count, OpenAI's usage.prompt_tokens) is fitted as
count = overhead + per_word * words: the chat template and system prompt add a fixed number of
tokens whatever the length, so a plain ratio would miss short targets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

# Common English words, each one token (with its leading space) in the BPE vocabularies of the
# usual small models; the calibration corrects whatever they come to in the model at hand.
_WORD_LIST = """
the of and to in is was for on that with as by at from his her they this were which have are had not
but one all their there been has more when who will would can into other time some only new these
two may first then any like over such our after most also made many before must through back years
where much your way well down should because each just those people how too little state good very
make world still own see men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right used take three house
water light river small city
"""
WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True)
class LengthFit:
    """Tokens the server counts for a prompt of `words` synthetic words: overhead + per_word * words."""

    overhead: float = 0.0
    per_word: float = 1.0

    def tokens(self, words: int) -> float:
        return self.overhead + self.per_word * words

    def words_for(self, tokens: int) -> int:
        """Words whose count comes closest to `tokens` (at least 1)."""
        return max(1, round((tokens - self.overhead) / self.per_word))


# Before any count: no overhead, one token a word (each word of WORDS is one token).
PRIOR = LengthFit()


def fit_length(points: Sequence[tuple[int, int]], prior: LengthFit = PRIOR) -> LengthFit:
    """The fit through measured (words, server count) points: least squares over two or more word
    counts; with one word count, its mean ratio keeps the prior's overhead out (a ratio); none: prior."""
    if not points:
        return prior
    n = len(points)
    mean_w = sum(w for w, _ in points) / n
    mean_c = sum(c for _, c in points) / n
    spread = sum((w - mean_w) ** 2 for w, _ in points)
    if spread > 0:
        per_word = sum((w - mean_w) * (c - mean_c) for w, c in points) / spread
        if per_word > 0:
            return LengthFit(overhead=mean_c - per_word * mean_w, per_word=per_word)
    if mean_w <= 0:
        return prior
    return LengthFit(overhead=0.0, per_word=mean_c / mean_w)


def synthetic_text(words: int, rng: random.Random) -> str:
    """`words` words drawn from WORDS, in sentences of twelve, ending with a period."""
    drawn = [rng.choice(WORDS) for _ in range(max(1, words))]
    sentences = [" ".join(drawn[i : i + 12]) for i in range(0, len(drawn), 12)]
    return ". ".join(s[0].upper() + s[1:] for s in sentences) + "."


def nonce_prefix(run_token: str, serial: int) -> str:
    """A short tag that differs for every request of a run (`serial`) and between runs
    (`run_token`, random per run), put first so that no prompt shares a prefix with another."""
    return f"[{run_token}{serial:x}] "
