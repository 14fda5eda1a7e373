"""SASRec (Kang & McAuley, ICDM 2018), the field's standard sequential baseline, compact and
faithful to RecBole's configuration (the protocol of the published anchors in docs/design.md §4):
item + learned position embeddings, causal self-attention blocks (post-LayerNorm, GELU FFN),
dropout, cross-entropy over all items at every position, Adam; early stopping on valid
NDCG@10 with full ranking; the history is not removed from the ranking.

RecBole 1.2.1 does not install on this stack (docs/design.md §5), hence this implementation.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from onereason.bench.baselines.early_stop import train_with_early_stopping
from onereason.config import Config
from onereason.corpus.user_layer import eval_prompts
from onereason.data.histories import items_of, user_histories
from onereason.decoding.constrained import Recommendation
from onereason.decoding.successors import SuccessorMemory
from onereason.metrics import evaluate_lists


class SASRecConfig(Config):
    """RecBole's SASRec defaults, except the epoch budget."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = Field(0.5, description="hidden and attention dropout (0.5 suits sparse Amazon data)")
    max_len: int = 50
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 200
    patience: int = Field(10, description="epochs without a better valid NDCG@10 before stopping")
    eval_every: int = 2
    seed: int = 0


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # 0 = padding
        self.pos = nn.Embedding(cfg.max_len, cfg.hidden)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, 4 * cfg.hidden, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, T] item indices, right-padded with 0 → hidden states [B, T, H].
        The causal mask alone keeps real positions from seeing the padding after them."""
        t = seq.shape[1]
        x = self.norm(self.item(seq) + self.pos(torch.arange(t, device=seq.device)))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=seq.device), 1)
        return self.blocks(self.drop(x), mask=causal)

    def scores(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores of every item [B, N+1] from each row's last real position (padding column: -inf)."""
        h = self.forward(seq)[torch.arange(len(seq)), lengths - 1]  # [B, H]
        s = h @ self.item.weight.T
        s[:, 0] = float("-inf")
        return s


def _right_pad(seqs: list[list[int]], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros((len(seqs), t), dtype=torch.long)
    lengths = torch.tensor([max(1, min(len(s), t)) for s in seqs])
    for i, s in enumerate(seqs):
        s = s[-t:]
        if s:
            out[i, : len(s)] = torch.tensor(s)
    return out, lengths


@torch.no_grad()
def _rank(model: SASRec, hists: list[list[int]], k: int, t: int, domain_mask: torch.Tensor | None = None,
          bs: int = 512) -> tuple[list[list[int]], list[list[float]]]:
    """Each history's top k item indices and their log-probabilities (softmax over the target domain)."""
    model.eval()
    out, logp = [], []
    for i in range(0, len(hists), bs):
        s = model.scores(*_right_pad(hists[i:i + bs], t))
        if domain_mask is not None:
            s = s.masked_fill(~domain_mask[i:i + bs], float("-inf"))
        top = s.log_softmax(dim=1).topk(k, dim=1)
        out.extend(top.indices.tolist())
        logp.extend(top.values.tolist())
    return out, logp


def _with_successors(memory: SuccessorMemory, name: np.ndarray, ranked: tuple[list[list[int]], list[list[float]]],
                     hists: list[list[int]], doms: list[str]) -> list[list[str]]:
    """SASRec's lists mixed with the successor memory, as the generative model's are (decoding/successors.py)."""
    return [memory.fuse(Recommendation(name[i].tolist(), lp), name[h[-1]], d).items
            for i, lp, h, d in zip(*ranked, hists, doms)]


def train_and_evaluate(inter: pd.DataFrame, cfg: SASRecConfig, ks: list[int], progress: bool = True,
                       test_users: list[str] | None = None, item_vectors: bool = False,
                       successor_weights: list[float] | None = None) -> dict:
    """Train on train-split sequences, pick the epoch by valid NDCG@10, evaluate on test (all users, or
    `test_users`: the bench's sample); the test lists come back per user under "lists". With `item_vectors`
    the chosen model's embedding rows of the items train holds come back too (a DataFrame item_id, vector
    under "item_vectors": collaborative vectors for `itemic.collab_vectors`). With `successor_weights` the chosen
    model is also given the successor memory, its weight chosen on valid, under "successors".
    Rankings are restricted to the target's domain, like the generative model's."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    items = sorted(inter["item_id"].unique())
    index = {it: i + 1 for i, it in enumerate(items)}
    item_dom = inter.drop_duplicates("item_id").set_index("item_id")["domain"]
    name = np.array([None] + items, dtype=object)
    dom_of = np.array([""] + [item_dom[i] for i in items])
    seqs = [[index[e.item] for e in s] for s in user_histories(inter, ("train",)).values() if len(s) >= 2]
    t1 = cfg.max_len + 1
    windows = [s[max(0, e - t1):e] for s in seqs for e in range(len(s), 1, -t1)]  # long histories: several windows

    def split_data(split: str, users: list[str] | None = None):
        p = eval_prompts(inter, split, cfg.max_len)
        if users is not None:
            p = p.only(users)
        doms = [item_dom[t[0]] for t in p.truths]
        mask = torch.tensor(np.stack([dom_of == d for d in doms])) if len(set(doms)) > 1 else None
        return [[index[i] for i in items_of(h)] for h in p.histories], p.truths, doms, mask, p.users

    valid, test = split_data("valid"), split_data("test", test_users)
    model = SASRec(len(items), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()

    def train_epoch() -> float:
        order = rng.permutation(len(windows))
        for b in range(0, len(order), cfg.batch_size):
            batch, _ = _right_pad([windows[i] for i in order[b:b + cfg.batch_size]], t1)
            inp, tgt = batch[:, :-1], batch[:, 1:]
            real = tgt != 0  # scores only where a next item exists: the same loss, 2.7x faster on short histories
            logits = model.forward(inp)[real] @ model.item.weight.T  # [targets, N+1]
            loss = nn.functional.cross_entropy(logits, tgt[real])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss.item()

    def valid_ndcg() -> float:
        top = name[_rank(model, valid[0], 10, cfg.max_len, valid[3])[0]].tolist()
        return evaluate_lists(top, valid[1], [10])["all"]["ndcg@10"]

    best, best_epoch = train_with_early_stopping(model, train_epoch, valid_ndcg, cfg.epochs, cfg.eval_every,
                                                 cfg.patience, "SASRec", progress)
    ranked = _rank(model, test[0], max(ks), cfg.max_len, test[3])
    top = name[ranked[0]].tolist()
    res = evaluate_lists(top, test[1], ks, test[2])
    out = {"metrics": res, "best_epoch": best_epoch, "valid_ndcg@10": best, "lists": dict(zip(test[4], top)),
           "seconds": time.perf_counter() - t0, "config": cfg.model_dump()}
    if successor_weights:
        table = SuccessorMemory.from_interactions(inter, 0.0)
        ranked_valid = _rank(model, valid[0], max(ks), cfg.max_len, valid[3])
        curve = {w: evaluate_lists(_with_successors(table.with_weight(w), name, ranked_valid, valid[0], valid[2]),
                                   valid[1], [10])["all"]["ndcg@10"] for w in successor_weights}
        w = max(successor_weights, key=lambda x: (curve[x], -x))
        fused = _with_successors(table.with_weight(w), name, ranked, test[0], test[2])
        out["successors"] = {"weight": w, "valid_ndcg@10": curve, "lists": dict(zip(test[4], fused)),
                             "metrics": evaluate_lists(fused, test[1], ks, test[2])}
    if item_vectors:  # an item only valid/test hold kept its random row: left out
        trained = sorted({i for s in seqs for i in s})
        out["item_vectors"] = pd.DataFrame({"item_id": name[trained],
                                            "vector": list(model.item.weight.detach()[trained].numpy())})
    return out

