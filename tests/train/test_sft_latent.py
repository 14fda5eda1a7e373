"""SFT with latent steps: the thinking R3 samples think in k latent steps instead of words, their latent
positions are never targets, and the saved model decodes the latent mode with the rule it was trained with."""

import pandas as pd

from onereason import rundir
from onereason.bench.lists import latent_lists, sample_prompts
from onereason.chat import END_THINK
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import load_model
from onereason.model.latent import latent_trace
from onereason.protocol import Decoding
from onereason.train import sft


def test_latent_sft_trains_and_decodes(latent_run):
    run_dir = latent_run  # the tiny run's SFT data, trained with 2 latent steps (conftest)
    df = pd.read_parquet(run_dir / rundir.SFT_DATA)
    tok, _ = load_sid_tokens(run_dir)
    nl = tok.encode("\n", add_special_tokens=False)
    silent = sft.latent_samples(df, 2)
    think = (df["task"] == "R3") & df["think"]
    assert think.any() and (silent.loc[~think, "assistant"] == df.loc[~think, "assistant"]).all()

    model = load_model(run_dir / rundir.SFT_MODEL).eval()
    ids = model.config.latent_token_ids
    assert len(ids) == 2 and min(ids) >= len(tok)  # new rows past the run's tokenizer
    saved = type(tok).from_pretrained(str(run_dir / rundir.SFT_MODEL))
    answer = saved(silent.loc[think, "assistant"].iloc[0], add_special_tokens=False)["input_ids"]
    assert answer[:len(nl) * 2 + 3] == nl + ids + nl + [tok.convert_tokens_to_ids(END_THINK)] == latent_trace(tok, ids)
    masks = sft.to_samples(silent.loc[think].head(3), saved, frozenset(ids))
    assert all(m == 0 for s in masks for t, m in zip(s.ids, s.mask) if t in ids)

    _, sid = load_sid_tokens(run_dir)
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", 50, 5, 0)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    items, prompts = latent_lists(model, p, domains, sid, tok, Decoding(beams=5), 3, 4)
    assert all(len(x) == 5 and set(x) <= set(sid.codec.item_ids) for x in items)
    assert all(sum(t in ids for t in q) == 2 for q in prompts)
