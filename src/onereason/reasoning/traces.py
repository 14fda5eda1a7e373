"""The R3 chain of thought: Persona Abstraction, Interest Expansion, Transition Inference.

`GroundedTeacher` writes a trace for a training user's history and real next item (hindsight
rationalization): the persona comes from the history alone; the interest hypotheses are ranked
from the history and the interest-to-interest transition statistics, with the target's
interest among them; the transition names the target's interest and why (recency, repeat,
complement, drift), citing history items by their tokens. The target item itself never
appears in a trace, and every cited item is in the history (`check_trace`).

A trace reads:

    Persona: steady · glassware labware · focused (4 items, 75% glassware labware, e.g. <SID>).
    Interests: 1. glassware labware; 2. jars bottles; 3. testing analysis.
    Transition: recency: stays with glassware labware, the interest of the last item <SID>.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from onereason.chat import PARTS, numbered, numbered_list
from onereason.data.histories import Event
from onereason.itemic.sid import SidCodec
from onereason.reasoning.chat_client import ChatClient
from onereason.reasoning.interests import Interests
from onereason.reasoning.personas import Personas, user_features

REASONS = ("recency", "repeat", "complement", "drift")


def drift_to(name: str) -> str:
    """The transition that names an interest without a reason from the history: what a trace edit (a
    business rule, a hypothesis given its own beam) writes."""
    return f"drift: moves to a new interest, {name}"


def split_trace(trace: str) -> tuple[str, list[str], str]:
    """(everything before Interests:, the listed interests, the transition text)."""
    at_i, at_t = trace.find(PARTS[1]), trace.find(PARTS[2])
    if at_i < 0 or at_t < at_i:
        return trace.strip(), [], ""
    return trace[:at_i].strip(), numbered(trace[at_i + len(PARTS[1]):at_t]), trace[at_t + len(PARTS[2]):].strip().rstrip(".")


def join_trace(head: str, listed: list[str], transition: str) -> str:
    """The inverse of `split_trace`."""
    return f"{head}\nInterests: {numbered_list(listed)}.\nTransition: {transition}."


def hypothesis_traces(trace: str) -> list[str]:
    """The trace itself, then, for each listed interest its transition does not name, the trace moved
    to that interest: one trace per hypothesis, so each can be given its own beam. A trace without an
    Interests line is returned alone."""
    head, listed, transition = split_trace(trace)
    return [trace] + [join_trace(head, listed, drift_to(n)) for n in listed if n not in transition]


class TraceError(ValueError):
    """A trace that breaks the format or cites an item it may not."""


def interest_transitions(histories: list[list[Event]], interests: Interests) -> np.ndarray:
    """P(next interest | current interest) from consecutive training items, add-one smoothed."""
    m = np.ones((len(interests), len(interests)))
    for events in histories:
        seq = [interests.of[e.item] for e in events]
        for a, b in zip(seq, seq[1:]):
            m[a, b] += 1
    return m / m.sum(1, keepdims=True)


class GroundedTeacher:
    def __init__(self, codec: SidCodec, interests: Interests, personas: Personas, brand: dict[str, str],
                 transitions: np.ndarray):
        self.codec, self.interests, self.personas = codec, interests, personas
        self.brand, self.transitions = brand, transitions

    def persona(self, events: list[Event], target: str | None = None) -> tuple[int, str]:
        """The prototype this history is nearest to, and the line that says so with its evidence
        (the latest item of the user's main interest, never the target)."""
        p = int(self.personas.assign(user_features(events, self.interests, self.brand)[None])[0])
        counts = Counter(self.interests.of[e.item] for e in events)
        top, c = counts.most_common(1)[0]
        example = next((e.item for e in reversed(events) if self.interests.of[e.item] == top and e.item != target),
                       None)
        eg = f", e.g. {self.codec.item_text(example)}" if example else ""
        return p, f"{self.personas.names[p]} ({len(events)} item{'s' * (len(events) > 1)}, {c / len(events):.0%} {self.interests.names[top]}{eg})"

    def ranked_interests(self, events: list[Event]) -> list[int]:
        """Interests in the target domain's order of likelihood given the history alone: recency-weighted
        history counts plus the transition row of the last item's interest."""
        score = self.transitions[self.interests.of[events[-1].item]].copy()
        for age, e in enumerate(reversed(events)):
            score[self.interests.of[e.item]] += 0.5 ** age + 0.2
        return [int(i) for i in np.argsort(-score, kind="stable")]

    def hypotheses(self, events: list[Event], n: int, domain: str, truth: int | None = None) -> list[int]:
        """Top n interests of `domain`; in hindsight the true interest replaces the last one if missing."""
        ranked = [i for i in self.ranked_interests(events) if self.interests.domain[i] == domain][:n]
        if truth is not None and truth not in ranked:
            ranked[-1] = truth
        return ranked

    def transition(self, events: list[Event], truth: int, target: str) -> str:
        """Which interest the next action moves to and why, citing history items other than the target."""
        name = self.interests.names
        last = self.interests.of[events[-1].item]
        same = [e.item for e in reversed(events) if self.interests.of[e.item] == truth and e.item != target]
        cite = self.codec.item_text
        if truth == last:
            why = f"recency: stays with {name[truth]}, the interest of the last item"
            return f"{why} {cite(same[0])}" if same else why
        if same:
            return f"repeat: returns to {name[truth]}, seen {len(same)} times before, e.g. {cite(same[0])}"
        row = self.transitions[last]
        if truth in np.argsort(-row)[:3]:
            return (f"complement: after {cite(events[-1].item)} in {name[last]}, users move on to {name[truth]} "
                    f"({row[truth]:.0%} of next steps)")
        return drift_to(name[truth])

    def foresight_trace(self, events: list[Event], n: int, domain: str) -> str:
        """The trace without hindsight: the top n interests of `domain` from the history and the transition
        statistics, and the move to the first of them with its reason (no model call: what the slow path
        can write from a whole history the prompt's window does not hold)."""
        _, persona = self.persona(events)
        hyp = self.hypotheses(events, n, domain)
        return join_trace(f"Persona: {persona}.", [self.interests.names[i] for i in hyp],
                          self.transition(events, hyp[0], ""))

    def trace(self, events: list[Event], target: str, n: int) -> str:
        truth = self.interests.of[target]
        _, persona = self.persona(events, target)
        hyp = self.hypotheses(events, n, self.interests.domain[truth], truth)
        return join_trace(f"Persona: {persona}.", [self.interests.names[i] for i in hyp],
                          self.transition(events, truth, target))


def check_trace(trace: str, history: list[str], codec: SidCodec, target: str | None = None,
                sample_id: str = "?") -> list[str]:
    """The items the trace cites; TraceError naming the sample if a part is missing or out of order,
    the transition names no known reason, a SID is unknown, a cited item is not in the history, or the target itself is cited."""
    at = [trace.find(p) for p in PARTS]
    if min(at) < 0 or at != sorted(at):
        raise TraceError(f"sample {sample_id}: trace must have {', '.join(PARTS)} in this order: {trace[:120]!r}")
    reason = trace[at[2] + len(PARTS[2]):].strip().split(":", 1)[0]
    if reason not in REASONS:
        raise TraceError(f"sample {sample_id}: the transition must start with one of {', '.join(REASONS)}, "
                         f"not {reason[:30]!r}")
    cited = codec.parse(trace)
    if None in cited:
        raise TraceError(f"sample {sample_id}: trace cites an unknown SID")
    hist = set(history)
    outside = [c for c in cited if c not in hist]
    if outside:
        raise TraceError(f"sample {sample_id}: trace cites {outside[0]}, which is not in the history")
    if target is not None and target in cited:
        raise TraceError(f"sample {sample_id}: trace cites the target item {target}")
    return cited  # type: ignore[return-value]


TEACHER_PROMPT = """Explain a shopper's next choice as a recommender's reasoning, in exactly three lines:
Persona: one persona from the list, then in brackets the evidence from the history.
Interests: exactly {n} interests from the list, most likely first, numbered "1. x; 2. y", including "{truth}".
Transition: one of recency, repeat, complement, drift, a colon, then why the next action moves to "{truth}",
citing history items by their tokens exactly as written below.
Do not name, cite or describe the next item itself.

Personas: {personas}
Interests: {interests}
History (oldest first):
{history}
The next item falls in the interest "{truth}"."""


class LLMTeacher:
    """Traces written by an OpenAI-compatible endpoint, with the grounded teacher's personas and
    interests as the vocabulary. An answer that breaks the format or cites an item it may not is
    retried, then the endpoint is named in the error."""

    def __init__(self, client: ChatClient, grounded: GroundedTeacher, titles: dict[str, str]):
        self.client, self.g, self.titles = client, grounded, titles

    def traces(self, cases: list[tuple[list[Event], str, int]], sample_ids: list[str]) -> list[str]:
        names = self.g.interests.names
        convs, parsers = [], []
        for (events, target, n), sid_ in zip(cases, sample_ids):
            domain = self.g.interests.domain[self.g.interests.of[target]]
            history = "\n".join(f"{self.g.codec.item_text(e.item)} {self.titles.get(e.item, '')}" for e in events)
            prompt = TEACHER_PROMPT.format(
                n=n, truth=names[self.g.interests.of[target]], personas="; ".join(self.g.personas.names),
                interests="; ".join(x for x, d in zip(names, self.g.interests.domain) if d == domain), history=history)
            convs.append([{"role": "user", "content": prompt}])
            parsers.append(self._parser([e.item for e in events], target, sid_))
        return self.client.complete_many(convs, parsers)

    def _parser(self, history: list[str], target: str, sample_id: str):
        def parse(content: str) -> str:
            start = content.find(PARTS[0])
            trace = content[start:].strip() if start >= 0 else content
            check_trace(trace, history, self.g.codec, target, sample_id)
            return trace
        return parse
