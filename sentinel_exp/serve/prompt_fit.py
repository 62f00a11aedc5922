"""Fitting an over-long prompt into the context window the way Ollama does.

Ollama (llm/llama_server.go, with context shift on, its default) does not reject a prompt of
num_ctx tokens or more: it keeps the first num_keep tokens (plus BOS), drops from the middle,
and leaves about half of the rest of the window free for generation. A benchmark against the
embedded server must see the same prompt_eval_count and prefill cost that Ollama would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

DEFAULT_NUM_KEEP = 4  # Ollama's api.DefaultOptions

T = TypeVar("T")


def prompt_limit(n_ctx: int, n_keep: int) -> int:
    """Tokens a truncated prompt keeps: num_keep, then half of what is left is freed."""
    if n_ctx <= 1:
        return 0
    n_keep = max(0, min(n_keep, n_ctx - 1))
    return n_ctx - max((n_ctx - n_keep) // 2, 1)


def fit_prompt(
    tokens: Sequence[T], n_ctx: int, num_keep: int = DEFAULT_NUM_KEEP, starts_with_bos: bool = True
) -> list[T]:
    """The prompt as Ollama would evaluate it: unchanged when it fits in n_ctx - 1 tokens."""
    full_limit = n_ctx - 1
    if n_ctx <= 1 or len(tokens) <= full_limit:
        return list(tokens)
    n_keep = len(tokens) if num_keep < 0 else num_keep
    if starts_with_bos:
        n_keep += 1
    n_keep = min(n_keep, full_limit)
    limit = prompt_limit(n_ctx, n_keep)
    discard = len(tokens) - limit
    return [*tokens[:n_keep], *tokens[n_keep + discard :]]
