"""TIGER-style baseline: learns a sequential pattern over SIDs and only emits real items."""

import numpy as np
import pandas as pd

from onereason.bench.tiger import TigerConfig, train_and_evaluate
from onereason.itemic.sid import SidCodec, SidTokens
from onereason.itemic.tokenizer import build_tokenizer


def test_tiger_learns_a_sequential_pattern():
    rng = np.random.default_rng(0)
    codes = rng.choice(np.arange(8 ** 3), size=30, replace=False)
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(30)], "domain": "d",
                          "code_0": codes // 64, "code_1": codes // 8 % 8, "code_2": codes % 8})
    codec = SidCodec(items)
    sid = SidTokens(codec, build_tokenizer(["a tokenizer text"] * 3, codec.code_vocab(), codec.special_vocab(),
                                           vocab_size=300))
    rows = [(f"u{u}", f"i{(u % 30 + t) % 30}", t, "d", float("nan")) for u in range(60) for t in range(8)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "domain", "rating"])
    inter["split"] = inter.groupby("user_id").cumcount(ascending=False).map({0: "test", 1: "valid"}).fillna("train")
    cfg = TigerConfig(d_model=32, layers=1, heads=2, d_kv=16, d_ff=64, epochs=60, patience=60, eval_every=20,
                      batch_size=32, lr=3e-3, beams=5)
    res = train_and_evaluate(inter, sid, cfg, [1, 5], progress=False)
    assert res["metrics"]["all"]["n"] == 60
    assert res["metrics"]["all"]["recall@5"] > 0.8  # MostPopular would get ~5/30
