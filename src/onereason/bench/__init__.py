"""OneReason-Bench: metrics (DESIGN.md §4), baselines and evaluation reports."""
