"""The chat format every stage speaks, written once: Qwen3's turns, the soft `/think` switch and the
think block. SFT data, decoding, RL, the bench and serving build and parse conversations only here.

    <|im_start|>user\n{user} /think<|im_end|>\n<|im_start|>assistant\n<think>\n{trace}\n</think>\n\n{answer}<|im_end|>

A non-thinking turn says `/no_think` and carries an empty think block (`EMPTY_THINK`).
"""

from __future__ import annotations

import re

IM_START, IM_END, THINK, END_THINK = "<|im_start|>", "<|im_end|>", "<think>", "</think>"
SPECIALS = [IM_START, IM_END, THINK, END_THINK]  # added to every tokenizer as special tokens
EMPTY_THINK = f"\n\n{END_THINK}\n\n"
PARTS = ("Persona:", "Interests:", "Transition:")  # a trace's lines, in this order (reasoning/traces.py)

TRACE = re.compile(rf"^\n(.*)\n{END_THINK}\n\n", re.S)  # a thinking response: group 1 is the trace
ANSWER = re.compile(rf"{END_THINK}\n\n(.*){re.escape(IM_END)}$", re.S)  # any response: group 1 is the answer


def chat_prompt(user: str, think: bool) -> str:
    """The user turn with the soft switch, and the assistant turn opened up to `<think>`."""
    return (f"{IM_START}user\n{user} {'/think' if think else '/no_think'}{IM_END}\n"
            f"{IM_START}assistant\n{THINK}")


def chat_response(answer: str, trace: str | None = None) -> str:
    """The rest of the assistant turn: the trace (or an empty think block), then the answer."""
    return (f"\n{trace}\n{END_THINK}\n\n" if trace else EMPTY_THINK) + f"{answer}{IM_END}"


def answer_turn(user: str) -> str:
    """A non-thinking chat prompt, ready for the answer."""
    return chat_prompt(user, False) + EMPTY_THINK


def conversation(messages: list[dict]) -> str:
    """OpenAI-style messages as turns, ending with the assistant turn opened (the served chat endpoint)."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages) + f"{IM_START}assistant\n"


def numbered_list(names: list[str]) -> str:
    """"1. a; 2. b": how R2 answers and a trace's Interests line list interests."""
    return "; ".join(f"{k + 1}. {n}" for k, n in enumerate(names))


def numbered(text: str) -> list[str]:
    """The names of a `numbered_list` (a trailing period allowed)."""
    return [re.sub(r"^\d+\.\s*", "", x.strip()) for x in text.strip().rstrip(".").split(";") if x.strip()]
