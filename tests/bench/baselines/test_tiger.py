"""TIGER-style baseline: trains over SIDs, early-stops on valid and only emits real items; its numbers
are the metric functions applied to the lists it returns."""

import numpy as np
import pandas as pd

from onereason.bench.baselines.tiger import TigerConfig, train_and_evaluate
from onereason.itemic.sid import SidCodec, SidTokens
from onereason.itemic.tokenizer import build_tokenizer
from test_sasrec import check_result, walks


def test_tiger_result_is_consistent():
    rng = np.random.default_rng(0)
    codes = rng.choice(np.arange(8 ** 3), size=30, replace=False)
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(30)], "domain": "d",
                          "code_0": codes // 64, "code_1": codes // 8 % 8, "code_2": codes % 8})
    codec = SidCodec(items)
    sid = SidTokens(codec, build_tokenizer(["a tokenizer text"] * 3, codec.code_vocab(), codec.special_vocab(),
                                           vocab_size=300))
    inter = walks()
    cfg = TigerConfig(d_model=32, layers=1, heads=2, d_kv=16, d_ff=64, epochs=4, patience=4, eval_every=2,
                      batch_size=32, lr=3e-3, beams=5)
    res = train_and_evaluate(inter, sid, cfg, [1, 5], progress=False)
    assert res["metrics"]["all"]["n"] == 60
    check_result(res, inter, [1, 5], epochs=4, eval_every=2)  # every list a real item: the trie holds
