"""Prompt truncation matches Ollama's context-shift rule (llm/llama_server.go)."""

from __future__ import annotations

from sentinel_exp.serve.prompt_fit import fit_prompt, prompt_limit


def test_prompt_that_fits_in_n_ctx_minus_one_is_unchanged() -> None:
    tokens = list(range(63))
    assert fit_prompt(tokens, 64) == tokens


def test_limit_keeps_num_keep_and_frees_half_of_the_rest() -> None:
    assert prompt_limit(2048, 5) == 2048 - 1021 == 1027
    assert prompt_limit(512, 5) == 259
    assert prompt_limit(64, 0) == 32
    assert prompt_limit(1, 4) == 0
    assert prompt_limit(8, 100) == 7  # num_keep clamped to n_ctx - 1, one token still freed


def test_long_prompt_keeps_bos_and_num_keep_then_the_tail() -> None:
    tokens = list(range(100))  # token 0 stands for BOS
    fitted = fit_prompt(tokens, 64, num_keep=4, starts_with_bos=True)
    assert len(fitted) == prompt_limit(64, 5) == 35
    assert fitted[:5] == [0, 1, 2, 3, 4]
    assert fitted[5:] == list(range(70, 100))


def test_without_bos_only_num_keep_is_kept() -> None:
    fitted = fit_prompt(list(range(100)), 64, num_keep=4, starts_with_bos=False)
    assert len(fitted) == prompt_limit(64, 4) == 34
    assert fitted[:4] == [0, 1, 2, 3] and fitted[4:] == list(range(70, 100))


def test_negative_num_keep_keeps_as_much_of_the_head_as_fits() -> None:
    fitted = fit_prompt(list(range(100)), 64, num_keep=-1, starts_with_bos=True)
    # n_keep = min(100 + 1, 63) = 63; limit = 64 - max(0, 1) = 63: the head, one token freed.
    assert fitted == list(range(63))


def test_zero_num_keep_keeps_only_the_tail() -> None:
    fitted = fit_prompt(list(range(100)), 64, num_keep=0, starts_with_bos=False)
    assert fitted == list(range(68, 100))
