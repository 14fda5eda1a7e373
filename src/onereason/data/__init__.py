"""Loading public and custom datasets into one schema (docs/design.md §2)."""

from onereason.data.registry import load_datasets, SHIPPED
from onereason.data.schema import DataError, Dataset

__all__ = ["DataError", "Dataset", "load_datasets", "SHIPPED"]
