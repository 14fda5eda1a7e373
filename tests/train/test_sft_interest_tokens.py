"""Interests as tokens (`sft.data.interest_tokens`): each interest is one special token written before its
words, the run's tokenizer learns it, SFT gives it a row that starts at its items' code rows, R2 and the
traces write it, and the R2 choice reads its probability."""

import shutil

import pandas as pd
import pytest
import torch

from onereason import rundir
from onereason.bench.lists import sample_prompts
from onereason.bench.r0_r2 import interest_choice
from onereason.chat import answer_turn, numbered
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import load_model
from onereason.pipeline import RunConfig
from onereason.reasoning.interests import Interests
from onereason.reasoning import sft_data
from onereason.reasoning.sft_data import r2_user
from onereason.reasoning.traces import split_trace
from onereason.train import sft


@pytest.fixture(scope="module")
def token_run(tiny_run, tmp_path_factory):
    """Two copies of the tiny run before SFT: one SFT'd for a fifth of an epoch with interest tokens (the
    default), one whose data is rebuilt with names alone (`interest_tokens: false`), the reference."""
    runs = tmp_path_factory.mktemp("runs")
    run_dir, plain = runs / "tokens", runs / "words"
    for d in (run_dir, plain):
        shutil.copytree(tiny_run[0], d, ignore=shutil.ignore_patterns("sft", "rl", "report", "bench", "eval"))
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text()).sft
    assert cfg.data.interest_tokens and cfg.data.r0_interest_samples == 40
    tok = load_sid_tokens(run_dir)[0]  # the tiny run's reasoning stage already added the interests
    before = len(tok) - sum(t.startswith("<|interest_") for t in tok.get_vocab())
    sft_data.build(cfg.data.replace(interest_tokens=False), plain, progress=False)
    sft.run(cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"epochs": 0.2})}), run_dir, progress=False,
            rebuild_data=True)
    return run_dir, before, plain


def test_interest_tokens_are_one_token_each_and_written_before_the_words(token_run):
    run_dir, before, plain = token_run
    interests = Interests.load(run_dir / rundir.INTERESTS)
    words = Interests.load(plain / rundir.INTERESTS)
    tok, _ = load_sid_tokens(run_dir)
    assert interests.tokens and len(tok) == before + len(interests)
    assert interests.names == [f"<|interest_{i}|> {n}" for i, n in enumerate(words.names)]
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in interests.token_strings())
    assert interests.find(words.names[0], words.domain[0]) == 0 == interests.find(interests.names[0], words.domain[0])

    df = pd.read_parquet(run_dir / rundir.SFT_DATA)
    r2 = df[df["task"] == "R2"]["assistant"].str.split("</think>\n\n").str[-1].str.removesuffix(".<|im_end|>")
    assert all(e in interests.names for a in r2 for e in numbered(a))
    which = df[df["user"].str.contains("Which interest is")]
    assert len(which) == 20 and len(df[df["user"].str.contains("Name items of")]) == 20
    codec = load_sid_tokens(run_dir)[1].codec
    for user, answer in which[["user", "assistant"]].itertuples(index=False):  # the item's own interest
        item = codec.parse(user)[0]
        assert answer.split("</think>\n\n")[-1].startswith(interests.names[interests.of[item]])
    traces = df[(df["task"] == "R3") & df["think"]]["assistant"]
    assert all(set(split_trace(t.split("</think>")[0])[1]) <= set(interests.names) for t in traces)
    # apart from the added perception samples, the data is the plain run's with names as tokens
    plain_df = pd.read_parquet(plain / rundir.SFT_DATA)
    assert len(df) == len(plain_df) + 40


def test_interest_rows_start_at_their_items_code_rows(token_run):
    run_dir, before, _ = token_run
    tok, sid = load_sid_tokens(run_dir)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    model = load_model(run_dir / "model")  # the pre-trained model, vocabulary without the interests
    assert model.get_input_embeddings().weight.shape[0] == before
    sft.add_interest_rows(model, tok, sid, interests)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) and model.get_output_embeddings().weight.shape[0] == len(tok)
    i = 0
    codes = [t for item in interests.members()[i] for t in sid.ids(item)[1:-1]]
    assert torch.allclose(emb[tok.convert_tokens_to_ids(interests.token_strings()[i])], emb[codes].mean(0))
    trained = load_model(run_dir / rundir.SFT_MODEL)  # already has the rows: SFT from it keeps them
    before_rows = trained.get_input_embeddings().weight.detach().clone()
    sft.add_interest_rows(trained, tok, sid, interests)
    assert torch.equal(trained.get_input_embeddings().weight, before_rows)


def test_r2_choice_reads_the_interest_tokens_probability(token_run):
    run_dir, _, _ = token_run
    tok, sid = load_sid_tokens(run_dir)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    model = load_model(run_dir / rundir.SFT_MODEL).eval()
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    v = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", 50, 6, 0)
    res = interest_choice(model, tok, sid, interests, v, 3, 4, per_user=True)
    first = res["ranked"][0]
    domain = sid.codec.item_domain[v.truths[0][0]]
    assert sorted(first) == [i for i, d in enumerate(interests.domain) if d == domain]
    # the ranking is the order of the tokens' next-token probabilities after "1. "
    prompt = tok(answer_turn(r2_user(HistoryText(sid, tok).text(v.histories[0]), 3)) + "1. ",
                 add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    ids = tok.convert_tokens_to_ids(interests.token_strings())
    expect = sorted(first, key=lambda i: -float(logits[ids[i]]))
    assert first == expect
