"""Stage `sft`: reasoning SFT from the pre-trained checkpoint on the R0–R3 chat samples.

The loss is on the assistant turn only: a sample's prompt (user turn and the opening
`<|im_start|>assistant\n<think>`) has mask 0, the rest (trace or empty think block, answer,
`<|im_end|>`) mask 1. A share of the tokens is plain text from the corpus Token layer (loss on
every token), replayed so that the chat samples do not erase the language model; `user_share` replays
User-layer windows the same way, for next-item prediction. Thinking R3
traces are checked again before training, so a malformed trace in an edited or LLM-written
sft.parquet is rejected with its sample id. With `latent_steps` the thinking R3 samples keep their
prompts and answers but think in k latent steps instead of words (the comparison of issue 24).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator

from onereason import rundir
from onereason.chat import ANSWER, TRACE, chat_response
from onereason.config import Config
from onereason.corpus.build import load_layer
from onereason.corpus.mixture import draw
from onereason.corpus.user_layer import HistoryText, target_mask
from onereason.itemic.sid import load_sid_tokens, SidCodec, SidTokens
from onereason.model.backbone import load_model
from onereason.model.latent import add_latent_steps, latent_tokens
from onereason.model.vocab import embedding_rows, grow_vocab
from onereason.reasoning.interests import Interests
from onereason.reasoning.sft_data import SftDataConfig, build
from onereason.reasoning.traces import check_trace
from onereason.rundir import write_text
from onereason.train.loop import LoopConfig, Sample, plot_log, save_model, train

GROUPS = ("R0", "R1", "R2", "R3 non-thinking", "R3 thinking", "text", "user")


class SftConfig(Config):
    data: SftDataConfig = SftDataConfig()
    init: str = Field("model", description="checkpoint to start from, relative to the run directory")
    text_share: float = Field(0.1, ge=0.0, lt=1.0, description="share of the training tokens that is Token-layer "
                              "text (language retention); 0 trains on the chat samples alone")
    text_context: int = Field(512, ge=16, description="Token-layer documents are cut into pieces of this many tokens")
    user_share: float = Field(0.0, ge=0.0, lt=1.0, description="share of the training tokens that is User-layer "
                              "windows as pre-training wrote them, loss on their items (next-item replay; 0.1 with "
                              "lr 3e-4 lifts non-thinking and lowers thinking after RL, bench/LOG.md)")
    latent_steps: int = Field(0, ge=0, le=16, description="train thinking R3 samples with this many latent steps "
                              "in place of their text trace (model/latent.py): a model whose thinking is silent, "
                              "trained on the same samples as the text one; 0: text traces")
    loop: LoopConfig = LoopConfig(epochs=2, lr=1e-3, warmup_ratio=0.03, checkpoint_every=200)

    @model_validator(mode="after")
    def _chat_keeps_a_share(self) -> "SftConfig":
        if self.text_share + self.user_share >= 1:
            raise ValueError(f"sft.text_share + sft.user_share = {self.text_share + self.user_share:g}: the chat "
                             "samples need a share above 0")
        return self


def check_samples(df: pd.DataFrame, codec: SidCodec) -> None:
    """Every thinking R3 sample's trace is well-formed and cites only its own history, never its target."""
    for sid_, user, assistant in df.loc[(df["task"] == "R3") & df["think"], ["sample_id", "user", "assistant"]
                                        ].itertuples(index=False):
        m = TRACE.match(assistant)
        if m is None:
            raise ValueError(f"sft data: sample {sid_} is a thinking sample without a <think> trace")
        target = [t for t in codec.parse(assistant[m.end():]) if t]
        check_trace(m.group(1), [i for i in codec.parse(user) if i], codec, target[0] if target else None, sid_)


def add_interest_rows(model: torch.nn.Module, tok, sid: SidTokens, interests: Interests) -> None:
    """Give the model a row per interest token (`sft.data.interest_tokens`), each new one starting at the mean
    row of its items' code tokens: the token begins where the items it stands for are. A model that already
    has the rows (SFT from an SFT model) keeps them."""
    old = grow_vocab(model, len(tok))
    with torch.no_grad():
        for token, items in zip(tok.convert_tokens_to_ids(interests.token_strings()), interests.members()):
            codes = [t for item in items for t in sid.ids(item)[1:-1]]
            for w in embedding_rows(model) if codes and token >= old else []:
                w[token] = w[codes].mean(0)


def load_with_interests(path: Path, run_dir: Path, tok, sid: SidTokens) -> torch.nn.Module:
    """The model at `path`, with a row per interest token when the run's interests have tokens (the SFT data
    then writes them)."""
    model = load_model(path)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    if interests.tokens:
        add_interest_rows(model, tok, sid, interests)
    return model


def group_of(task: str, think: bool) -> int:
    return GROUPS.index("R3 thinking" if think else "R3 non-thinking") if task == "R3" else GROUPS.index(task)


def to_samples(df: pd.DataFrame, tok, untargeted: frozenset[int] = frozenset()) -> list[Sample]:
    """Prompt tokens (mask 0) then assistant tokens (mask 1, except the `untargeted` ones: latent steps are
    inputs, never predictions), grouped by task and mode for the loss log."""
    prompts = tok(df["user"].tolist(), add_special_tokens=False)["input_ids"]
    answers = tok(df["assistant"].tolist(), add_special_tokens=False)["input_ids"]
    return [Sample(p + a, [0] * len(p) + [int(t not in untargeted) for t in a],
                   groups=[group_of(task, k)] * (len(p) + len(a)))
            for p, a, task, k in zip(prompts, answers, df["task"], df["think"])]


def latent_samples(df: pd.DataFrame, steps: int) -> pd.DataFrame:
    """The thinking R3 samples with their text trace replaced by `steps` latent tokens; the rest unchanged."""
    think = (df["task"] == "R3") & df["think"]
    silent = "".join(latent_tokens(steps))
    out = df.copy()
    out.loc[think, "assistant"] = [chat_response(ANSWER.search(a).group(1), silent) for a in df.loc[think, "assistant"]]
    return out


def with_replay(samples: list[Sample], run_dir: Path, config: "SftConfig", mark_ids: np.ndarray) -> list[Sample]:
    """Add pre-training documents until they are their shares of all tokens. Token-layer text in pieces of
    `text_context` tokens, every token learned (group "text"): without it the chat samples drive
    general-text perplexity up by orders of magnitude (bench/LOG.md: 209 → 57,476 on amazon-scientific).
    User-layer windows whole, loss on their items as in pre-training (group "user")."""
    total = config.text_share + config.user_share  # below 1 (`SftConfig`)
    chat = sum(len(s.ids) for s in samples)
    rng = np.random.default_rng(config.loop.seed)
    out = list(samples)
    if config.text_share > 0:
        docs = [d for d, _ in draw(load_layer(run_dir, "token"), int(chat * config.text_share / (1 - total)), {}, rng)]
        g, n = GROUPS.index("text"), config.text_context
        pieces = [d[i:i + n] for d in docs for i in range(0, len(d), n) if len(d) - i > 1]
        out += [Sample(p, [1] * len(p), groups=[g] * len(p)) for p in pieces]
    if config.user_share > 0:
        g = GROUPS.index("user")
        for d, first in draw(load_layer(run_dir, "user"), int(chat * config.user_share / (1 - total)), {}, rng):
            out.append(Sample(d, target_mask(d, first, mark_ids).astype(int).tolist(), groups=[g] * len(d)))
    return out


def run(config: SftConfig, run_dir: Path, progress: bool = True, rebuild_data: bool = False) -> dict:
    """Build the R0-R3 data if missing (or asked to), check it, train; the data stats come back under "data"."""
    out = run_dir / rundir.SFT
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", config.model_dump_json(indent=2))
    data_path = run_dir / rundir.SFT_DATA
    if rebuild_data or not data_path.exists():
        build(config.data, run_dir, progress=progress)
    df = pd.read_parquet(data_path)
    tok, sid = load_sid_tokens(run_dir)
    check_samples(df, sid.codec)
    init = run_dir / config.init
    if not (init / "config.json").exists():
        raise FileNotFoundError(f"sft: no model at {init} (run `onereason pretrain` first, or set sft.init)")
    model = load_with_interests(init, run_dir, tok, sid)
    latent = frozenset()
    if config.latent_steps:
        latent = frozenset(add_latent_steps(model, tok, config.latent_steps))
        df = latent_samples(df, config.latent_steps)
    samples = with_replay(to_samples(df, tok, latent), run_dir, config, HistoryText(sid, tok).mark_ids)
    model, stats = train(model, samples, tok.pad_token_id, config.loop, out, progress=progress,
                         group_names=list(GROUPS))
    save_model(model, tok, out / "model")
    plot_log(out / "train_log.jsonl", out / "loss.png", ["loss", "lr"], "reasoning SFT")
    stats.update({"data": json.loads((run_dir / "reasoning" / "stats.json").read_text()), "samples": len(samples),
                  "tokens_per_epoch": int(sum(len(s.ids) for s in samples)),
                  **{f"{g}_tokens_per_epoch": sum(len(s.ids) for s in samples[len(df):]  # replay follows the chat
                                                  if s.groups[0] == GROUPS.index(g)) for g in ("text", "user")},
                  "assistant_tokens_per_epoch": int(sum(sum(s.mask) for s in samples[:len(df)]))})
    write_text(out / "summary.json", json.dumps(stats, indent=2))
    return stats
