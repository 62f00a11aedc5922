"""The doctor (`python -m sentinel_exp sweep=diagnose`): from "it is slow" to a measured fix.

It measures the configuration as given (the baseline), draws hypotheses from that run's evidence
(its verdict, the option lint, cold starts, placement, contention), measures each plausible fix
against the baseline in an interleaved, paired study, and writes a report that starts with the
answer (docs/guides/doctor.md).

The pure parts are `evidence.py` (what the baseline says), `hypotheses.py` (what to test, and what
not and why), `verdicts.py` (what the studies showed) and `text.py` (the report's words); the
steps that measure, and the doctor's folder, state and parent run, are `steps.py` and `state.py`.
"""
