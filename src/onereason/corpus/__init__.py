"""Training text: the Token, Item, Relational and User layers (DESIGN.md §1)."""
