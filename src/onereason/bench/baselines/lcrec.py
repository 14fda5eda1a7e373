"""LC-Rec-style baseline (Zheng et al., ICDE 2024): the same pre-trained LLM fine-tuned on its
semantic IDs without any reasoning: item-text alignment (the R0 samples) and next-item
prediction (every R3 sample in non-thinking form: no trace, no interest request). Everything else
(data, SIDs, loop, decoding) is ours, so the comparison isolates what the reasoning data adds.

Trained from the run's pre-trained `model` into `bench/lcrec/lr<lr>/model` per grid point; the
valid split's NDCG@10 picks one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from onereason import rundir
from onereason.bench.lists import chat_lists, sample_prompts
from onereason.chat import ANSWER, EMPTY_THINK, IM_END, chat_response
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists
from onereason.model.backbone import load_model
from onereason.protocol import Decoding, EvalSample
from onereason.train.loop import save_model, train as train_loop
from onereason.train.sft import GROUPS, SftConfig, load_with_interests, to_samples, with_replay

_THINK_ASK = re.compile(rf" Expand \d interests?\. /think{re.escape(IM_END)}")


VALID = EvalSample(split="valid")  # the lr grid is chosen on valid users (how many: `valid_users`)
VALID_DECODING = Decoding(beams=20, trace_tokens=8, temperature=0.0)  # non-thinking: no trace is sampled


def model_dir(lr: float) -> str:
    """The grid point's model directory, relative to the run."""
    return f"bench/lcrec/lr{lr:g}/model"


def without_reasoning(df: pd.DataFrame) -> pd.DataFrame:
    """The R0 and R3 samples of an SFT set, every R3 sample in non-thinking form."""
    df = df[df["task"].isin(["R0", "R3"])].copy()
    think = df["think"].to_numpy()
    df.loc[think, "user"] = df.loc[think, "user"].str.replace(_THINK_ASK, f" /no_think{IM_END}", regex=True)
    df.loc[think, "assistant"] = [chat_response(ANSWER.search(a).group(1)) for a in df.loc[think, "assistant"]]
    df["think"] = False
    bad = df["user"].str.contains(f" /think{IM_END}", regex=False) | ~df["assistant"].str.startswith(EMPTY_THINK)
    if bad.any():
        raise ValueError(f"LC-Rec data: {int(bad.sum())} sample(s) still carry reasoning, e.g. "
                         f"{df.loc[bad, 'sample_id'].iloc[0]}")
    return df


def train(run_dir: Path, lrs: list[float], epochs: float, progress: bool = True, valid_users: int = 300) -> dict:
    """One SFT per learning rate, the valid split picks; returns the grid and the choice."""
    data = run_dir / rundir.SFT_DATA
    if not data.exists():
        raise FileNotFoundError(f"LC-Rec-style baseline: no SFT data at {data} (run `onereason sft` first)")
    if not (run_dir / rundir.MODEL / "config.json").exists():
        raise FileNotFoundError(f"LC-Rec-style baseline: no pre-trained model at {run_dir / 'model'}")
    df = without_reasoning(pd.read_parquet(data))
    tok, sid = load_sid_tokens(run_dir)
    sft_path = run_dir / rundir.SFT / "config.json"  # the run's reasoning SFT: same loop, same replay shares
    sft = SftConfig.model_validate_json(sft_path.read_text()) if sft_path.exists() else SftConfig()
    samples = with_replay(to_samples(df, tok), run_dir, sft, HistoryText(sid, tok).mark_ids)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    p = sample_prompts(inter, VALID.split, 50, valid_users, VALID.seed)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    grid = []
    for lr in lrs:
        out = (run_dir / model_dir(lr)).parent
        loop = sft.loop.replace(lr=lr, epochs=epochs)
        if not (out / "model" / "config.json").exists():
            model = load_with_interests(run_dir / rundir.MODEL, run_dir, tok, sid)  # R0 asks about interest tokens
            model, _ = train_loop(model, samples, tok.pad_token_id, loop, out, progress=progress, group_names=list(GROUPS))
            save_model(model, tok, out / "model")
        model = load_model(out / "model")
        lists = chat_lists(model, p, domains, sid, tok, False, VALID_DECODING, 1, 32, VALID.seed, progress)[0]
        grid.append({"lr": lr, "valid_ndcg@10": evaluate_lists(lists, p.truths, [10])["all"]["ndcg@10"]})
    best = max(grid, key=lambda g: g["valid_ndcg@10"])
    return {"chosen_lr": best["lr"], "grid": grid, "epochs": epochs, "samples": len(samples),
            "tokens_per_epoch": int(sum(len(s.ids) for s in samples)), "valid_users": len(p.users)}
