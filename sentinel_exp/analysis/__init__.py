"""Analysis: pure functions over records (statistics, SLOs, the run verdict, comparisons)."""
