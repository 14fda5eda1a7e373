"""R0 captions scored by information points, as the reference benchmark scores them: an LLM judge
lists the key facts of the item's own text, then says which of them a caption states and how many
of the caption's own facts agree with that text. Recall = stated / reference facts, precision =
agreeing / caption facts, F1 per item, then the mean. Needs an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import re

import numpy as np

from onereason.reasoning.chat_client import ChatClient

POINTS = ("List the key facts of this product text (brand, kind, size, material, use, ...) as a JSON list of "
          "short strings, and nothing else.\n\nText: {text}")
CHECK = ("Reference facts (JSON): {points}\nCaption: {caption}\n"
         "Answer with one JSON object: {{\"stated\": [true or false for each reference fact, in order], "
         "\"caption_facts\": the number of facts the caption states, \"caption_facts_correct\": how many of "
         "those agree with the reference facts}}")


def _points(answer: str) -> list[str]:
    m = re.search(r"\[.*\]", answer, re.S)
    if m is None:
        raise ValueError("no JSON list in the answer")
    points = json.loads(m.group(0))
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise ValueError("expected a JSON list of strings")
    return points


def _checker(n: int):
    def parse(answer: str) -> dict:
        m = re.search(r"\{.*\}", answer, re.S)
        if m is None:
            raise ValueError("no JSON object in the answer")
        v = json.loads(m.group(0))
        stated, facts, correct = v["stated"], int(v["caption_facts"]), int(v["caption_facts_correct"])
        if len(stated) != n or not 0 <= correct <= facts:
            raise ValueError(f"expected {n} stated flags and 0 <= correct <= facts, got {v}")
        return {"stated": [bool(s) for s in stated], "facts": facts, "correct": correct}
    return parse


def info_point_f1(client: ChatClient, references: list[str], captions: list[str]) -> dict:
    """Mean information-point precision / recall / F1 of `captions` against `references` (items whose
    reference yields no facts are skipped and counted)."""
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    points = client.complete_many([user(POINTS.format(text=r)) for r in references], _points)
    keep = [i for i, p in enumerate(points) if p]
    checks = client.complete_many([user(CHECK.format(points=json.dumps(points[i]), caption=captions[i])) for i in keep],
                                  [_checker(len(points[i])) for i in keep])
    prec, rec, f1 = [], [], []
    for i, c in zip(keep, checks):
        r = sum(c["stated"]) / len(points[i])
        p = c["correct"] / c["facts"] if c["facts"] else 0.0
        prec.append(p)
        rec.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    mean = lambda x: float(np.mean(x)) if x else None  # noqa: E731
    return {"precision": mean(prec), "recall": mean(rec), "f1": mean(f1), "n": len(keep),
            "skipped_no_facts": len(references) - len(keep)}
