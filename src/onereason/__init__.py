"""onereason: reasoning generative recommenders, from item tokens to serving."""

__version__ = "0.1.0"
