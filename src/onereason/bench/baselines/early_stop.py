"""The baselines' shared training schedule: epochs, valid NDCG@10 every few epochs, the best
weights kept, stop after `patience` epochs without improvement."""

from __future__ import annotations

from typing import Callable

from torch import nn
from tqdm.auto import tqdm


def train_with_early_stopping(model: nn.Module, train_epoch: Callable[[], float], valid_ndcg: Callable[[], float],
                              epochs: int, eval_every: int, patience: int, desc: str,
                              progress: bool = True) -> tuple[float, int]:
    """Runs `train_epoch` (returns its last loss) per epoch, evaluating every `eval_every` epochs and
    after the last one (a budget shorter than `eval_every` still picks weights); leaves the model
    with the weights of the best valid NDCG@10 and returns (that NDCG@10, its epoch)."""
    best, best_state, best_epoch, bad = -1.0, None, 0, 0
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        model.train()
        loss = train_epoch()
        if (epoch + 1) % eval_every and epoch + 1 < epochs:
            continue
        ndcg = valid_ndcg()
        bar.set_postfix(loss=f"{loss:.3f}", valid_ndcg10=f"{ndcg:.4f}")
        if ndcg > best:
            best, best_epoch, bad = ndcg, epoch + 1, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += eval_every
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    return best, best_epoch
