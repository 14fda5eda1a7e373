"""Generating items: beam search constrained by the SID trie, so every item is a real one."""
