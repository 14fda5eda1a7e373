"""Two-stage rollouts: G reasoning traces per prompt, then M candidate items per trace.

Stage 1 samples the traces (temperature, top-p; citations limited to the user's history), stage 2
runs the trie-constrained beam search from prompt + trace, so every candidate is a real item of
the target domain. In non-thinking mode the think block is empty and there is one trajectory
per prompt (the beam is deterministic). A latent model (`sft.latent_steps`) thinks in its k latent steps
instead of a sampled trace: deterministic too, so one trajectory per prompt whose items carry the gradient
(through the latent steps' hidden states) and no trace tokens. The backend is an interface: `HFBackend` uses
transformers generate; a vLLM backend plugs in with the same two methods. `RolloutConfig` is what
GRPO, RFT and MOPD share (their configs extend it); `rollout_step` draws each prompt's mode and n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydantic import Field, field_validator

from onereason.chat import END_THINK
from onereason.config import Config
from onereason.corpus.user_layer import HistoryText
from onereason.decoding.constrained import recommend
from onereason.decoding.two_stage import generate_traces
from onereason.itemic.sid import SidTokens
from onereason.model.latent import latent_ids, latent_trace
from onereason.protocol import Decoding
from onereason.reasoning.sft_data import hypothesis_choices, r3_prompts
from onereason.reasoning.traces import TraceError, check_trace
from onereason.rl.prompts import RlPrompt
from onereason.rl.reward import RewardConfig


def sampled(decoding: Decoding) -> Decoding:
    """A rollout config's decoding, refused when greedy: a group of greedy traces are all one trace."""
    if decoding.temperature <= 0:
        raise ValueError(f"decoding.temperature={decoding.temperature}: rollouts sample traces, it must be > 0")
    return decoding


class RolloutConfig(Config):
    """What GRPO, RFT and MOPD roll out with, declared once: the prompts (the next-items window that is
    the ground truth; history items: the run's corpus.max_items), the mode, G traces and n hypotheses, the decoding, the reward, the seed."""

    mode: str = Field("thinking", pattern="^(thinking|non-thinking|both)$",
                      description="both: each prompt is thinking or not with probability 1/2")
    group: int = Field(4, ge=1, description="G: traces per thinking prompt")
    hypotheses: list[int] = Field([1, 2, 3, 4, 5], description="n interest hypotheses a thinking prompt asks "
                                  "for, drawn per prompt (as SFT draws them)")
    window: int = Field(3, ge=1, description="next items of the user that count as ground truth")
    decoding: Decoding = Field(Decoding(beams=16, temperature=1.0, top_p=1.0),
                               description="rollouts: beams = M items per trace; a sampled (non-zero) temperature")
    reward: RewardConfig = RewardConfig()
    seed: int = 0

    renamed_keys = {"candidates": "decoding.beams", "trace_tokens": "decoding.trace_tokens",
                    "temperature": "decoding.temperature", "top_p": "decoding.top_p"}
    _sampled = field_validator("decoding")(sampled)
    _hypotheses = field_validator("hypotheses", mode="before")(hypothesis_choices)


@dataclass
class Trajectory:
    """One trace and its candidate items. `prefix` = prompt + trace + "\\n\\n" + begin token; the
    trace (the reasoning tokens, `</think>` included) is prefix[n_prompt : n_prompt + trace_len]."""

    prompt: int  # index of the prompt in the rollout batch
    prefix: list[int]
    n_prompt: int
    trace_len: int
    items: list[str]
    item_tokens: list[list[int]]  # codes + end token per item (the begin token is in the prefix)
    thinking: bool = False  # a thinking prompt (its trace in words, or latent steps with trace_len 0)
    trace: str = ""
    format_ok: bool = True
    reward: float = float("nan")
    components: dict = field(default_factory=dict)
    item_rewards: list[float] = field(default_factory=list)


class RolloutBackend(Protocol):
    latent: list[int] | None  # a latent model's latent tokens: it thinks with them, not with sampled traces

    def traces(self, prompts: list[list[int]], histories: list[list[str]], seed: int, hypotheses: list[int]
               ) -> list[list[int]]:
        """One sampled trace per prompt, ending with `</think>`; `hypotheses`: the n each prompt asks for."""

    def items(self, prefixes: list[list[int]], domains: list[str], m: int) -> list[list[str]]:
        """M distinct valid items per prefix (which ends with the domain's begin token)."""


class HFBackend:
    def __init__(self, model, sid: SidTokens, tok, decoding: Decoding, batch_size: int = 32):
        self.model, self.sid, self.tok, self.decoding, self.batch_size = model, sid, tok, decoding, batch_size
        self.latent = latent_ids(model)

    def traces(self, prompts: list[list[int]], histories: list[list[str]], seed: int, hypotheses: list[int]
               ) -> list[list[int]]:
        return generate_traces(self.model, prompts, histories, self.sid, self.tok, self.decoding, self.batch_size, seed,
                               hypotheses=hypotheses)

    def items(self, prefixes: list[list[int]], domains: list[str], m: int) -> list[list[str]]:
        recs = recommend(self.model, prefixes, domains, self.sid, self.tok.pad_token_id, k=m, num_beams=m,
                         batch_size=self.batch_size)
        return [r.items for r in recs]


def draw_hypotheses(choices: list[int], n: int, seed: int, step: int) -> list[int]:
    """n per prompt, drawn from `choices` (seeded by step), as SFT draws them: RL trains every n the
    model will be asked for, not one."""
    return [int(x) for x in np.random.default_rng([seed, step, 2]).choice(choices, n)]


def two_stage(backend: RolloutBackend, prompts: list[RlPrompt], text: HistoryText, tok, thinking: bool,
              g: int, m: int, hypotheses: int | list[int] = 3, seed: int = 0) -> list[Trajectory]:
    """G traces per prompt (1 without thinking), each expanded into M candidate items. `hypotheses`: the n
    every thinking prompt asks for, or one per prompt."""
    sid = text.sid
    nl = tok.encode("\n\n", add_special_tokens=False)
    end_think = tok.convert_tokens_to_ids(END_THINK)
    ns = hypotheses if isinstance(hypotheses, list) else [hypotheses] * len(prompts)
    base = r3_prompts([p.history for p in prompts], [p.domain for p in prompts], ns if thinking else None, text, tok)
    words = thinking and not backend.latent  # a sampled text trace (a latent model thinks in its latent steps)
    g = g if words else 1
    owner = [i for i in range(len(prompts)) for _ in range(g)]
    if words:
        traces = backend.traces([base[i] for i in owner], [[e.item for e in prompts[i].history] for i in owner], seed,
                                [ns[i] for i in owner])
    elif thinking:
        traces = [latent_trace(tok, backend.latent) for _ in owner]
    else:
        traces = [nl + [end_think] for _ in owner]
    prefixes = [base[i] + t + nl + [sid.begin_id[prompts[i].domain]] for i, t in zip(owner, traces)]
    items = backend.items(prefixes, [prompts[i].domain for i in owner], m)
    out = []
    for i, t, pre, its in zip(owner, traces, prefixes, items):
        traj = Trajectory(i, pre, len(base[i]), len(t) if words else 0, its, [sid.ids(x)[1:] for x in its],
                          thinking=thinking)
        if words:
            traj.trace = tok.decode(t[:-1], skip_special_tokens=False).strip()
            try:
                check_trace(traj.trace, [e.item for e in prompts[i].history], sid.codec, None, prompts[i].prompt_id)
            except TraceError:
                traj.format_ok = False
        out.append(traj)
    return out


def rollout_modes(cfg: RolloutConfig, n: int, step: int) -> list[bool]:
    """Thinking or not per prompt, from the mode (both: a seeded coin per prompt)."""
    if cfg.mode != "both":
        return [cfg.mode == "thinking"] * n
    return list(np.random.default_rng([cfg.seed, step, 1]).random(n) < 0.5)


def rollout_step(backend, pool_prompts: list[RlPrompt], thinking: list[bool], text: HistoryText, tok,
                 cfg: RolloutConfig, seed: int, step: int = 0) -> list[Trajectory]:
    """Two-stage rollouts for the thinking and the non-thinking prompts of a step, each thinking prompt
    asking for its own drawn n."""
    trajs: list[Trajectory] = []
    ns = draw_hypotheses(cfg.hypotheses, len(pool_prompts), cfg.seed, step)
    for mode in (True, False):
        idx = [i for i, k in enumerate(thinking) if k == mode]
        if not idx:
            continue
        part = two_stage(backend, [pool_prompts[i] for i in idx], text, tok, mode, cfg.group, cfg.decoding.beams,
                         [ns[i] for i in idx], seed)
        for t in part:
            t.prompt = idx[t.prompt]
        trajs += part
    return trajs
