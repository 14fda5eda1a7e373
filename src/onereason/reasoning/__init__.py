"""Reasoning data: interests, personas, the relation judge, chain-of-thought traces, SFT tasks."""
