"""The baselines' early stopping, on a scripted valid curve: the best epoch's weights are kept and
training stops `patience` epochs after it."""

import torch
from torch import nn

from onereason.bench.baselines.early_stop import train_with_early_stopping


def test_keeps_the_best_weights_and_stops_after_patience():
    model = nn.Linear(1, 1, bias=False)
    curve = iter([0.10, 0.30, 0.20, 0.25, 0.15, 0.50])  # valid NDCG@10 at epochs 2, 4, 6, 8, 10, 12
    epochs_run = []

    def train_epoch() -> float:
        epochs_run.append(len(epochs_run) + 1)
        with torch.no_grad():
            model.weight.fill_(len(epochs_run))  # the weight records the epoch it was written in
        return 0.0

    best, epoch = train_with_early_stopping(model, train_epoch, lambda: next(curve), epochs=20, eval_every=2,
                                            patience=6, desc="t", progress=False)
    assert (best, epoch) == (0.30, 4)
    assert epochs_run[-1] == 10  # epochs 6, 8 and 10 were no better: 6 epochs without improvement
    assert model.weight.item() == 4.0  # the weights of epoch 4, not of the last epoch


def test_a_budget_shorter_than_eval_every_still_evaluates_the_last_epoch():
    model = nn.Linear(1, 1, bias=False)
    best, epoch = train_with_early_stopping(model, lambda: 0.0, lambda: 0.2, epochs=1, eval_every=2, patience=6,
                                            desc="t", progress=False)
    assert (best, epoch) == (0.2, 1)
