"""RL on a latent model: a thinking prompt continues with the model's latent steps (one trajectory, no
trace tokens), the cached log-probs equal a plain forward through the latent rule, and GRPO trains it and
saves a model that still thinks silently."""

import json

import pandas as pd
import torch

from onereason import rundir
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import load_model
from onereason.model.latent import latent_ids, latent_trace
from onereason.protocol import Decoding
from onereason.reasoning.sft_data import r3_prompts
from onereason.rl import grpo
from onereason.rl.grpo import GrpoConfig
from onereason.rl.prompts import PromptPool
from onereason.rl.rollout import HFBackend, two_stage
from onereason.rl.trainer import token_logprobs


def test_latent_rollouts_think_with_the_latent_steps(latent_run):
    tok, sid = load_sid_tokens(latent_run)
    model = load_model(latent_run / rundir.SFT_MODEL).eval()
    ids = latent_ids(model)
    pool = PromptPool(pd.read_parquet(latent_run / rundir.INTERACTIONS), sid.codec.item_domain, 20)
    prompts = pool.sample(3, seed=0, step=0)
    text = HistoryText(sid, tok)
    trajs = two_stage(HFBackend(model, sid, tok, Decoding(temperature=1.0)), prompts, text, tok, True, 4, 3, 2)
    assert len(trajs) == 3 and all(t.thinking and t.trace_len == 0 and t.trace == "" for t in trajs)
    for t, p in zip(trajs, prompts):
        base = r3_prompts([p.history], [p.domain], [2], text, tok)[0]
        assert t.n_prompt == len(base) and t.prefix[:len(base)] == base
        assert t.prefix[len(base):len(base) + len(latent_trace(tok, ids))] == latent_trace(tok, ids)
        assert len(t.items) == 3 and set(t.items) <= set(sid.codec.item_ids)
    with torch.no_grad():
        got = token_logprobs(model, trajs, tok.pad_token_id)
        want = []
        for t in trajs:
            for item in t.item_tokens:
                lp = torch.log_softmax(model(input_ids=torch.tensor([t.prefix + item])).logits[0].float(), -1)
                want += [lp[len(t.prefix) + j - 1, item[j]] for j in range(len(item))]
    assert torch.allclose(got, torch.stack(want), atol=1e-4)


def test_grpo_trains_a_latent_model(latent_run):
    cfg = GrpoConfig.model_validate({"init": str(rundir.SFT_MODEL), "out": "rl/latent", "mode": "both", "steps": 2,
                                     "prompts_per_step": 4, "group": 2, "decoding": {"beams": 4, "temperature": 1.0},
                                     "set_to_items": True, "policy": {"micro_batch": 4, "lr": 1e-3}})
    grpo.run(cfg, latent_run, progress=False)
    rows = [json.loads(l) for l in (latent_run / "rl/latent/train_log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["reasoning_tokens"] == 0 and r["item_tokens"] > 0 for r in rows)
    before, after = load_model(latent_run / rundir.SFT_MODEL), load_model(latent_run / "rl/latent/model")
    assert latent_ids(after) == latent_ids(before)
    emb = before.get_input_embeddings().weight
    assert not torch.equal(after.get_input_embeddings().weight[latent_ids(before)], emb[latent_ids(before)])
