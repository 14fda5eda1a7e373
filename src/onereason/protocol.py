"""What every evaluation stage shares, declared once: which users it scores (`EvalSample`) and how
candidates are decoded (`Decoding`). `eval`, `sft-eval`, `rl-eval` and the bench each hold one of each,
with their own defaults; `onereason run --max-users N` sets the four samples' size at once. GRPO, RFT,
MOPD and the service decode with a `Decoding` too (their beam is the items per trace)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onereason.config import Config
from onereason.metrics import KS


class EvalSample(Config):
    """A seeded sample of one split's users. The same seed and size give the same users in every stage, and
    samples of one seed nest: the 500 users of the bench's default are among the 3,000 of sft-eval's."""

    split: str = Field("test", pattern="^(valid|test)$", description="valid (choosing) or test (reporting)")
    max_users: int | None = Field(None, ge=1, description="a seeded sample of the split's users (None: all)")
    seed: int = 0


class Decoding(Config):
    """Beam search over the item trie, and in thinking mode the sampled trace before it."""

    beams: int = Field(20, ge=1, description="beam width = candidates per user (k=64 needs 64)")
    ks: list[int] = Field(list(KS), description="cut-offs; those above `beams` are skipped")
    trace_tokens: int = Field(160, ge=8, description="trace budget; `</think>` is appended if it runs out")
    temperature: float = Field(0.6, ge=0, description="trace sampling temperature (0: greedy)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus cut of trace sampling (1: none)")
    exact_n: bool = Field(False, description="the trace's Interests line lists exactly the n hypotheses the "
                          "prompt asks for (`decoding.two_stage.InterestCountLogitsProcessor`)")
    interests: Literal["sampled", "chosen"] = Field("sampled", description="the trace's Interests line sampled, or "
                                                    "chosen: the n interests of the target domain the model scores "
                                                    "most probable (`decoding.two_stage`), the rest sampled")

    def cutoffs(self) -> list[int]:
        """The cut-offs the beam can fill."""
        return [k for k in self.ks if k <= self.beams]
