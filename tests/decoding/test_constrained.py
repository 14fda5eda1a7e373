"""Constrained beam search: never an invalid SID, the requested domain only, and parity with the
slow reference beam search."""

import numpy as np
import pandas as pd
import pytest
from transformers import AutoModelForCausalLM

from onereason.corpus.user_layer import HistoryText, eval_prompts
from onereason.decoding.constrained import PromptCache, recommend, reference_beam_search
from onereason.itemic.sid import SidCodec, SidTokens
from onereason.itemic.tokenizer import build_tokenizer
from onereason.model.backbone import build_model
from onereason.itemic.sid import load_sid_tokens


def _two_domain_world(seed: int):
    rng = np.random.default_rng(seed)
    codes = rng.choice(np.arange(8 ** 3), size=40, replace=False)
    df = pd.DataFrame({"item_id": [f"i{j}" for j in range(40)], "domain": ["x"] * 25 + ["y"] * 15,
                       "code_0": codes // 64, "code_1": codes // 8 % 8, "code_2": codes % 8})
    codec = SidCodec(df)
    tok = build_tokenizer(["text for a tokenizer"] * 3, codec.code_vocab(), codec.special_vocab(), vocab_size=300)
    return codec, tok, SidTokens(codec, tok)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_model_only_emits_valid_items_of_the_domain(seed):
    codec, tok, sid = _two_domain_world(seed)
    model = build_model("tiny", len(tok), seed=seed)  # untrained: unconstrained it would emit junk
    rng = np.random.default_rng(seed)
    hists = [list(rng.choice(codec.item_ids, size=rng.integers(1, 6))) for _ in range(7)]
    domains = ["x", "y", "x", "y", "y", "x", "y"]
    prompts = [[tok.bos_token_id] + [t for i in h for t in sid.ids(i)] + [sid.begin_id[d]] for h, d in zip(hists, domains)]
    recs = recommend(model, prompts, domains, sid, tok.pad_token_id, k=12, batch_size=3)
    for rec, dom in zip(recs, domains):
        assert len(rec.items) == 12 and len(set(rec.items)) == 12
        assert all(codec.item_domain[i] == dom for i in rec.items)
        assert rec.scores == sorted(rec.scores, reverse=True)


def test_all_items_of_a_small_domain_come_back():
    codec, tok, sid = _two_domain_world(3)
    model = build_model("tiny", len(tok), seed=3)
    rec = recommend(model, [[tok.bos_token_id, sid.begin_id["y"]]], ["y"], sid, tok.pad_token_id, k=15)[0]
    assert sorted(rec.items) == sorted(i for i in codec.item_ids if codec.item_domain[i] == "y")


def test_a_trie_that_allows_nothing_is_an_error_not_another_prompts_items():
    codec, tok, sid = _two_domain_world(0)
    prompts = [[tok.bos_token_id, sid.begin_id[d]] for d in ("x", "y")]
    with pytest.raises(ValueError, match="prompt 1 of the batch: its trie allows no token"):
        recommend(build_model("tiny", len(tok)), prompts, ["x", "y"], sid, tok.pad_token_id, k=3, tries=[None, {}])


def test_beam_narrower_than_k_is_an_error():
    codec, tok, sid = _two_domain_world(0)
    with pytest.raises(ValueError, match="num_beams=5 < k=10"):
        recommend(build_model("tiny", len(tok)), [[0]], ["x"], sid, tok.pad_token_id, k=10, num_beams=5)


@pytest.mark.parametrize("score_end", [True, False])
def test_batched_matches_reference_on_trained_model(tiny_run, score_end):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"))
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    p = eval_prompts(inter, "test", 30)
    text = HistoryText(sid, tok)
    prompts = [text.prompt(h, "movies") for h in p.histories[:6]]
    fast = recommend(model, prompts, ["movies"] * 6, sid, tok.pad_token_id, k=8, batch_size=4, score_end=score_end)
    for p, rec in zip(prompts, fast):
        ref = reference_beam_search(model, p, "movies", sid, num_beams=8, score_end=score_end)
        assert rec.items == ref.items
        assert np.allclose(rec.scores, ref.scores, atol=1e-4)


def test_prompts_read_from_the_prompt_cache_give_the_same_lists(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"))
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    text = HistoryText(sid, tok)
    # the cached prompts the longest: the mixed batch is wider than the prompts it prefills
    prompts = [text.prompt(h[-n:], "movies") for h, n in zip(eval_prompts(inter, "test", 30).histories, (30, 20, 15, 8, 4))]
    assert len(prompts[2]) > len(prompts[3])
    plain = recommend(model, prompts, ["movies"] * 5, sid, tok.pad_token_id, k=6, batch_size=5)
    cache = PromptCache(max_bytes=1 << 30)
    first = recommend(model, prompts[:3], ["movies"] * 3, sid, tok.pad_token_id, k=6, prompt_cache=cache)
    mixed = recommend(model, prompts, ["movies"] * 5, sid, tok.pad_token_id, k=6, batch_size=5, prompt_cache=cache)
    assert (cache.hits, cache.misses, len(cache.entries)) == (3, 5, 5)
    for a, b in zip(plain, first + mixed[3:]):
        assert a.items == b.items and np.allclose(a.scores, b.scores, atol=1e-5)
    assert [r.items for r in mixed[:3]] == [r.items for r in first]
