"""The four layers: no valid/test leakage, templates that prompts can reuse, windows anchored at
the newest item, packing that keeps documents apart and never cuts an item, mixtures that fail loudly."""

import numpy as np
import pandas as pd
import pytest
import torch

from onereason.corpus.item_layer import item_documents, sid_to_title, title_to_sid
from onereason.corpus.mixture import build_rows, check_mixture, draw, pack
from onereason.corpus.relational_layer import relational_documents, transition_counts
from onereason.corpus.user_layer import HistoryText, eval_prompts, training_sequences, window_stats, windows
from onereason.itemic.marks import gap_token, mark_vocab
from onereason.itemic.sid import SidCodec, SidTokens
from onereason.itemic.tokenizer import build_tokenizer
from onereason.model.backbone import build_model

NAN = float("nan")


def _world(marks=("gap", "rating")):
    """Six items; e and f occur only as valid/test targets; u0 has real times and ratings."""
    items = pd.DataFrame({"item_id": list("abcdef"), "domain": "d",
                          "title": ["Red pen", "Blue pen", "Stapler", "Glue", "Secret E", "Secret F"],
                          "description": ["Red pen", "A blue pen", "", "", "", ""],
                          "categories": [["pens"], ["pens"], ["desk"], ["desk"], ["desk"], ["pens"]],
                          "brand": ["acme", "acme", "", "", "", "acme"],
                          "complements": [["c"], [], ["a"], [], [], []], "substitutes": [["b"], ["a"], [], [], [], []]})
    rows = []
    for u in range(6):
        seq = "abcd" if u % 2 else "cdab"
        t0 = 1_500_000_000 if u == 0 else 0
        rows += [(f"u{u}", it, t0 + j * 86400 * 3, "d", 4.0 if u == 0 else NAN, "train") for j, it in enumerate(seq)]
        rows += [(f"u{u}", "e", t0 + 5 * 86400 * 3, "d", NAN, "valid"), (f"u{u}", "f", t0 + 6 * 86400 * 3, "d", NAN, "test")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "domain", "rating", "split"])
    codes = pd.DataFrame({"item_id": list("abcdef"), "domain": "d", "code_0": [0, 0, 1, 1, 2, 2], "code_1": [0, 1, 0, 1, 0, 1]})
    codec = SidCodec(codes)
    tok = build_tokenizer(["Red pen Blue pen stapler glue rated days"] * 5, codec.code_vocab(),
                          codec.special_vocab() + mark_vocab(list(marks)), vocab_size=300)
    return items, inter, codec, tok, SidTokens(codec, tok)


def test_relational_and_user_layers_use_the_train_split_only():
    items, inter, codec, tok, sid = _world()
    secret = {codec.item_text("e"), codec.item_text("f")}
    rel = relational_documents(items, inter, codec, min_count=1, partners=2)
    transitions = [t for _, t in rel if t.startswith("After")]
    assert transitions and not any(s in t for t in transitions for s in secret)
    assert ("e", "f") not in transition_counts(inter) and transition_counts(inter)[("a", "b")] == 6
    assert any("complements" in t for _, t in rel) and any("substitutes" in t for _, t in rel)
    users = training_sequences(inter, HistoryText(sid, tok), max_items=50)
    secret_ids = {tuple(sid.ids("e")), tuple(sid.ids("f"))}
    for _, ids, _ in users:
        assert not any(tuple(ids[i:i + sid.length]) in secret_ids for i in range(len(ids)))
    assert len(users) == 6


def test_user_text_has_one_token_marks_after_items_only_where_the_data_has_them():
    items, inter, codec, tok, sid = _world()
    text = HistoryText(sid, tok)
    seqs = dict(enumerate(ids for _, ids, _ in training_sequences(inter, text, 50)))
    vocab = tok.get_vocab()
    gap, r4 = vocab["<|gap_3d|>"], vocab["<|rating_4|>"]
    # u0 (real times, ratings): item a, its rating; item b, then its gap since a, its rating; ...
    assert seqs[0][:1 + 2 * (sid.length + 1) + 1] == [tok.bos_token_id, *sid.ids("c"), r4, *sid.ids("d"), gap, r4]
    assert len(seqs[0]) == 1 + 4 * sid.length + 3 + 4 <= 1 + 4 * text.max_item_tokens
    assert seqs[1] == [tok.bos_token_id] + [t for it in "abcd" for t in sid.ids(it)]  # no clock, no rating
    assert gap_token(0) == "<|gap_0d|>" and gap_token(86400 * 20) == "<|gap_2w|>" and gap_token(86400 * 800) == "<|gap_1y|>"
    plain_tok, plain_sid = _world(marks=())[3:]
    assert HistoryText(plain_sid, plain_tok).marks == [] and HistoryText(plain_sid, plain_tok).max_item_tokens == 4


def test_no_prompt_carries_anything_of_its_target():
    """The target's time was in the prompt as the request-time gap; now a prompt is the history alone."""
    items, inter, codec, tok, sid = _world()
    text = HistoryText(sid, tok)
    p = eval_prompts(inter, "test", 50)
    moved = inter.assign(timestamp=inter["timestamp"] + np.where(inter["split"] == "test", 86400 * 400, 0))
    q = eval_prompts(moved, "test", 50)
    assert [text.prompt(h, "d") for h in p.histories] == [text.prompt(h, "d") for h in q.histories]
    assert all(text.prompt(h, "d")[-1] == sid.begin_id["d"] for h in p.histories)


def test_windows_are_anchored_at_the_newest_item_and_train_every_target_once():
    for n, w, s in [(1, 50, 25), (7, 50, 25), (50, 50, 25), (51, 50, 25), (120, 50, 25), (300, 20, 7)]:
        ws = windows(n, w, s)
        assert ws[-1][1] == n and ws[0][0] == 0  # the newest item ends the last window
        targets = [t for start, end, first in ws for t in range(first, end)]
        assert targets == list(range(n))  # every item a target exactly once, in order
        for start, end, first in ws:
            assert end - start <= w and start <= first < end
            assert start == 0 or first - start >= w - s  # a later target sees at least w - s earlier items


def test_training_windows_start_their_loss_at_their_first_target_and_never_exceed_the_context():
    items, inter, codec, tok, sid = _world()
    text = HistoryText(sid, tok)
    seqs = training_sequences(inter, text, max_items=3, stride=1)  # u0 "cdab": windows c d a | d a b
    (_, first_ids, first_start), (_, second_ids, second_start) = seqs[:2]
    assert first_start == 1 and first_ids[1:1 + sid.length] == sid.ids("c")  # the first window predicts all
    assert second_ids[1:1 + sid.length] == sid.ids("d")
    assert second_start == 1 + (sid.length + 1) + (sid.length + 2)  # <bos>, d + rating, a + gap + rating
    assert second_ids[second_start:second_start + sid.length] == sid.ids("b")
    stats = window_stats(inter, 3, 1)
    assert stats["targets"] == 24 and stats["windows"] == 12
    assert stats["mean_context_items"] == (0 + 1 + 2 + 2) / 4
    # A window longer than the context is refused rather than cut inside an item.
    layer = pd.DataFrame({"domain": ["d"], "ids": [[1] * 20], "first": [1]})
    with pytest.raises(ValueError, match="corpus.max_items"):
        build_rows({"user": layer}, ["user"], {"user": 1.0}, {}, 20, 16, pad_id=0, seed=0)


def test_item_layer_holds_out_titles_and_prompts_are_prefixes_of_statements():
    items, inter, codec, tok, sid = _world()
    docs = [t for _, t in item_documents(items, codec, heldout={"a"})]
    assert not any("Red pen" in t for t in docs)  # a's title is never paired with its SID
    assert f"The category of {codec.item_text('a')} is pens." in docs
    assert sum(t.startswith(sid_to_title(codec.item_text("b"))) for t in docs) == 1  # the prompt is unambiguous
    stmt = next(t for t in docs if t.startswith("The item Blue pen"))
    full = tok.encode(stmt, add_special_tokens=False)
    prompt = tok.encode(title_to_sid("Blue pen"), add_special_tokens=False) + [sid.begin_id["d"]]
    assert full[:len(prompt)] == prompt


def test_pack_restarts_positions_and_keeps_every_token():
    docs = [(0, np.arange(10, 15)), (1, np.arange(20, 27)), (0, np.arange(30, 50)), (1, np.arange(60, 63))]
    p = pack([(layer, d, np.arange(len(d)) > 0) for layer, d in docs], context=8, pad_id=1)
    real = p.ids[p.layers >= 0]
    assert sorted(real.tolist()) == sorted(np.concatenate([d for _, d in docs]).tolist())
    assert not p.targets[p.positions == 0].any() and not p.targets[p.layers < 0].any()  # a cut piece starts fresh
    assert p.targets.sum() == (p.layers >= 0).sum() - (p.positions[p.layers >= 0] == 0).sum()
    assert p.ids.shape[1] == 8 and (p.positions[:, 0] == 0).all()
    assert len(p.ids) == 5  # best fit: 35 tokens in the fewest rows of 8 that whole pieces allow
    row = next(r for r in range(5) if (p.layers[r] >= 0).sum() == 7)  # the 7-token document
    assert p.positions[row].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]  # then padding as its own segment
    assert p.tokens_per_layer(["a", "b"]) == {"a": 25, "b": 10}


def test_draw_meets_the_budget_keeps_windows_whole_and_weights_domains():
    docs = pd.DataFrame({"domain": ["x"] * 50 + ["y"] * 50, "ids": [list(range(10))] * 100})
    rng = np.random.default_rng(0)
    got = draw(docs, 333, {}, rng)  # text: the last document cut to fit
    assert sum(len(d) for d, _ in got) == 333 and all(first == 1 for _, first in got)
    windows = draw(docs.assign(first=4), 333, {}, rng)  # User-layer windows: never cut
    assert sum(len(d) for d, _ in windows) == 340 and all(len(d) == 10 and f == 4 for d, f in windows)
    only_x = draw(docs.assign(ids=[[i] * 10 for i in range(100)]), 200, {"y": 0.0}, rng)
    assert all(d[0] < 50 for d, _ in only_x)


def test_packed_rows_attend_within_their_own_document():
    """The slow reference: each document alone gives the same logits as inside a packed row."""
    model = build_model("tiny", 64, seed=0).eval()
    docs = [np.array([3, 4, 5, 6]), np.array([7, 8, 9]), np.array([10, 11, 12, 13, 14])]
    p = pack([(0, d, np.ones(len(d), bool)) for d in docs], context=16, pad_id=1)
    assert len(p.ids) == 1
    with torch.no_grad():
        packed = model(input_ids=torch.tensor(p.ids, dtype=torch.long),
                       position_ids=torch.tensor(p.positions, dtype=torch.long), use_cache=False).logits[0]
        for d in docs:
            start = int(np.flatnonzero(p.ids[0] == d[0])[0])  # best fit places the longest first
            alone = model(input_ids=torch.from_numpy(d[None])).logits[0]
            assert torch.allclose(packed[start:start + len(d)], alone, atol=1e-5)


def test_mixture_errors_name_the_field():
    layers = {"token": pd.DataFrame({"domain": [""], "ids": [[1, 2]]}),
              "relational": pd.DataFrame({"domain": [], "ids": []})}
    with pytest.raises(ValueError, match=r"pretrain.full.mixture: unknown layer 'items'"):
        check_mixture(layers, {"items": 1.0}, {}, "pretrain.full")
    with pytest.raises(ValueError, match=r"pretrain.full.mixture.relational: weight 0.5 but the layer has no documents"):
        check_mixture(layers, {"token": 1.0, "relational": 0.5}, {}, "pretrain.full")
    with pytest.raises(ValueError, match=r"domain_weights: unknown domain 'books'"):
        check_mixture(layers, {"token": 1.0}, {"books": 2.0}, "pretrain.full")
    rows = build_rows(layers, ["token", "relational"], {"token": 1.0}, {}, 40, 8, pad_id=0, seed=0)
    assert rows.tokens_per_layer(["token", "relational"]) == {"token": 40, "relational": 0}
