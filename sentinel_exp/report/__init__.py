"""What a person reads: the console, report.md and the figures."""
