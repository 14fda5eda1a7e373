"""TIGER-style baseline (Rajput et al., NeurIPS 2023): an encoder-decoder transformer that reads the
history as semantic-ID tokens and generates the next item's SID, over the *same* SIDs as our model,
decoded with the same prefix trie (every generated item is real, in the target's domain).

The paper's shape is T5 with 4 encoder and 4 decoder layers, d_model 128, 6 heads of 64, FFN 1024,
ReLU, dropout 0.1, the last 20 items (4.5M parameters here, 4.7 s per batch of 256 on 2 cores).
The default keeps the depth, width and history and narrows attention and FFN (4 heads of 32, FFN
512: 1.5M parameters, the size of our default LM) so that a tuning grid fits a CPU session. Our vocabulary is compact (padding, eos, then every SID token of
the run: domain begin/end tokens and the codes). Training pairs are every position of the training
sequences (history → next item); the epoch is picked by valid NDCG@10 on a sample of valid users.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from transformers import T5Config, T5ForConditionalGeneration

from onereason.bench.baselines.early_stop import train_with_early_stopping
from onereason.config import Config
from onereason.corpus.user_layer import eval_prompts
from onereason.data.histories import items_of, user_histories
from onereason.itemic.sid import SidTokens, build_trie
from onereason.metrics import evaluate_lists

PAD, EOS = 0, 1


class TigerConfig(Config):
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    d_kv: int = 32
    d_ff: int = 512
    dropout: float = 0.1
    max_items: int = Field(20, description="history items the encoder reads (the latest)")
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 40
    patience: int = Field(6, description="epochs without a better valid NDCG@10 before stopping")
    eval_every: int = 2
    eval_users: int = Field(1000, description="valid users sampled for early stopping")
    beams: int = 20
    seed: int = 0


class Vocab:
    """Compact ids for the run's SID tokens; an item's encoder piece is begin + codes, its target
    begin + codes + end."""

    def __init__(self, sid: SidTokens):
        self.sid = sid
        tokens = sorted(set(sid.item_tokens.reshape(-1).tolist()))
        self.of = {t: j + 2 for j, t in enumerate(tokens)}
        self.rows = {item: [self.of[t] for t in sid.ids(item)] for item in sid.codec.item_ids}
        self.by_row = {tuple(r): item for item, r in self.rows.items()}
        self.trie = build_trie(list(self.rows.values()))
        self.begin = {d: self.of[b] for d, b in sid.begin_id.items()}

    def __len__(self) -> int:
        return len(self.of) + 2

    def encode(self, items: list[str], max_items: int) -> list[int]:
        return [t for i in items[-max_items:] for t in self.rows[i][:-1]] + [EOS]


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(map(len, rows))
    ids = torch.full((len(rows), t), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids, (ids != PAD).long()


@torch.no_grad()
def generate(model: T5ForConditionalGeneration, vocab: Vocab, hists: list[list[str]], domains: list[str],
             k: int, max_items: int, beams: int, bs: int = 64) -> list[list[str]]:
    """Top-k items per history by trie-constrained beam search in the target's domain."""
    model.eval()
    out: list[list[str]] = []
    length = vocab.sid.length
    for s in range(0, len(hists), bs):
        ids, attn = _pad([vocab.encode(h, max_items) for h in hists[s:s + bs]])
        doms = domains[s:s + bs]

        def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
            prefix = tuple(sent.tolist()[1:])  # after the decoder start token
            if not prefix:
                return [vocab.begin[doms[batch_id]]]
            return vocab.trie.get(prefix, [PAD]) if len(prefix) < length else [PAD]

        gen = model.generate(input_ids=ids, attention_mask=attn, num_beams=beams, num_return_sequences=beams,
                             max_new_tokens=length, min_new_tokens=length, do_sample=False,
                             prefix_allowed_tokens_fn=allowed, early_stopping=True, length_penalty=0.0)
        rows = gen[:, 1:length + 1].tolist()
        for b in range(len(doms)):
            items = dict.fromkeys(vocab.by_row.get(tuple(r)) for r in rows[b * beams:(b + 1) * beams])
            out.append([i for i in items if i is not None][:k])
    return out


def train_and_evaluate(inter: pd.DataFrame, sid: SidTokens, cfg: TigerConfig, ks: list[int],
                       progress: bool = True, test_users: list[str] | None = None) -> dict:
    """Train on every position of the training sequences, pick the epoch by valid NDCG@10, test (all
    users, or `test_users`); the test lists come back per user under "lists"."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vocab = Vocab(sid)
    pairs = [(vocab.encode(items_of(h[max(0, j - cfg.max_items):j]), cfg.max_items), vocab.rows[h[j].item])
             for h in user_histories(inter, ("train",)).values() for j in range(1, len(h))]
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(vocab), d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, num_layers=cfg.layers,
        num_decoder_layers=cfg.layers, num_heads=cfg.heads, dropout_rate=cfg.dropout, feed_forward_proj="relu",
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    by_len = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), rng.random()))
    batches = [by_len[b:b + cfg.batch_size] for b in range(0, len(by_len), cfg.batch_size)]

    def split(name: str, n: int | None, users: list[str] | None = None):
        p = eval_prompts(inter, name, cfg.max_items)
        if users is not None:
            p = p.only(users)
        idx = sorted(rng.choice(len(p.users), n, replace=False)) if n and n < len(p.users) else range(len(p.users))
        return ([items_of(p.histories[i]) for i in idx], [p.truths[i] for i in idx],
                [sid.codec.item_domain[p.truths[i][0]] for i in idx], [p.users[i] for i in idx])

    valid, test = split("valid", cfg.eval_users), split("test", None, test_users)
    t0 = time.perf_counter()

    def train_epoch() -> float:
        for b in rng.permutation(len(batches)):  # batches of similar lengths, in random order
            batch = [pairs[i] for i in batches[b]]
            ids, attn = _pad([x for x, _ in batch])
            loss = model(input_ids=ids, attention_mask=attn, labels=torch.tensor([y for _, y in batch])).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss.item()

    def valid_ndcg() -> float:
        top = generate(model, vocab, valid[0], valid[2], 10, cfg.max_items, cfg.beams)
        return evaluate_lists(top, valid[1], [10])["all"]["ndcg@10"]

    best, best_epoch = train_with_early_stopping(model, train_epoch, valid_ndcg, cfg.epochs, cfg.eval_every,
                                                 cfg.patience, "TIGER", progress)
    top = generate(model, vocab, test[0], test[2], max(ks), cfg.max_items, max(cfg.beams, max(ks)))
    return {"metrics": evaluate_lists(top, test[1], ks, test[2]), "best_epoch": best_epoch, "valid_ndcg@10": best,
            "lists": dict(zip(test[3], top)),
            "seconds": time.perf_counter() - t0, "parameters": sum(p.numel() for p in model.parameters()),
            "config": cfg.model_dump()}
