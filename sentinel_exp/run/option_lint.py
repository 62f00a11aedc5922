"""The option lint at a run's edges (the rules themselves are lint.py, pure): what the run sends,
the machine's cores and the prompts' length gathered into a LintInput before any request;
`lint=strict` turned into an error (exit 2); the num_ctx rule again once warmup has shown the
prompt lengths as the server counts them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import psutil

from sentinel_exp.analysis.diagnosis import keep_alive_in_force
from sentinel_exp.checks.options import (
    RULES,
    Findings,
    LintInput,
    counted_prompt_tokens,
    estimated_prompt_tokens,
    lint,
    rules_named,
)
from sentinel_exp.clients.base import Options
from sentinel_exp.config.schema import ExperimentConfig
from sentinel_exp.errors import ConfigError
from sentinel_exp.names import LintMode, ServerKind
from sentinel_exp.records import RequestRecord
from sentinel_exp.run.servers import ServerHandle
from sentinel_exp.serve.sim_settings import UNMODELLED_OPTIONS, unmodelled_note
from sentinel_exp.urls import is_loopback_url
from sentinel_exp.workload.source import PromptSource

log = logging.getLogger(__name__)


class OptionLint:
    """One run's lint findings and the warnings they make; raises ConfigError under lint=strict."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        handle: ServerHandle,
        options: Options,
        unsent: Sequence[str],
        prompts: PromptSource,
    ) -> None:
        self.strict = cfg.lint == LintMode.strict
        self.rules = () if cfg.lint == LintMode.off else RULES
        note = None
        if handle.kind == ServerKind.simulated:
            # Its rules judge what values do to a llama.cpp runner, which the simulated server is not.
            self.rules = tuple((name, rule) for name, rule in self.rules if name not in UNMODELLED_OPTIONS)
            note = unmodelled_note(options)
        self.given = lint_input(cfg, handle, options, unsent, prompts)
        self.findings = self._checked(lint(self.given, self.rules))
        self.warnings = self.findings.lines() + ([note] if note else [])

    def tags(self) -> dict[str, str]:
        return self.findings.tags()

    def recheck_after_warmup(self, records: Sequence[RequestRecord]) -> dict[str, str]:
        """The num_ctx rule with the prompt lengths the server counted in warmup; the tags of what
        it finds. A counted finding replaces the estimated one in the warnings."""
        counted = counted_prompt_tokens(r.prompt_eval_count for r in records if r.ok)
        rules = tuple(rule for rule in rules_named("num_ctx") if rule in self.rules)
        if counted is None or not rules:
            return {}
        given = dataclasses.replace(self.given, prompt_tokens=counted, tokens_estimated=False)
        found = self._checked(lint(given, rules))
        if not found.items:
            return {}
        estimated = {f.line for f in self.findings.items if f.rule == "num_ctx"}
        self.warnings = [w for w in self.warnings if w not in estimated] + found.lines()
        for line in found.lines():
            log.warning("warning: %s", line)
        return found.tags()

    def _checked(self, findings: Findings) -> Findings:
        if findings.items and self.strict:
            raise ConfigError(
                f"lint=strict: {len(findings.items)} option lint finding(s), so the run stops here: "
                + " | ".join(findings.lines())
                + " (lint=warn measures anyway, with these as warnings)"
            )
        return findings


def lint_input(
    cfg: ExperimentConfig, handle: ServerHandle, options: Options, unsent: Sequence[str], prompts: PromptSource
) -> LintInput:
    """What the option lint judges: the options and keep_alive the run sends, the machine's
    cores (where the server runs on this machine) and the prompts' length, estimated."""
    keep_alive_s: float | None = None
    source = "workload.keep_alive"
    if "keep_alive" in unsent:
        pass  # not sent: the server's own setting, which this API cannot tell
    elif cfg.workload.keep_alive is not None:
        keep_alive_s = keep_alive_in_force(cfg.workload.keep_alive, None)
    elif handle.kind in (ServerKind.embedded, ServerKind.simulated):
        keep_alive_s, source = keep_alive_in_force(None, cfg.server.keep_alive), "the bundled server's default"
    elif handle.kind == ServerKind.ollama:
        keep_alive_s, source = (
            keep_alive_in_force(None, None),
            "Ollama's default unless OLLAMA_KEEP_ALIVE says otherwise",
        )
    targeted, texts = prompts.longest_prompt_tokens()
    return LintInput(
        options=options,
        warmup_options=options,  # both phases send the same options
        keep_alive_s=keep_alive_s,
        keep_alive_source=source,
        idle_gap_s=cfg.workload.longest_idle_gap_s() or None,
        physical_cores=psutil.cpu_count(logical=False) if is_loopback_url(handle.url) else None,
        prompt_tokens=targeted or estimated_prompt_tokens(texts, cfg.workload.system),
        tokens_estimated=True,
    )
