"""Training text: the Token, Item, Relational and User layers (docs/design.md §1)."""
