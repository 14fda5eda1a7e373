"""OneReason-Bench: metrics (docs/design.md §4), baselines and evaluation reports."""
