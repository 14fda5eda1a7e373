"""What each pre-training stage is measured by, on held-out data:

- R0 item perception: SID → title token-F1 (greedy generation) and title → SID exact match
  (trie-constrained beam search), on items whose SID ↔ title statements were held out of the
  Item layer, and on items the layer did state (memorization);
- perplexity on the held-out general-text documents;
- next-item Recall@10 / NDCG@10 on the valid split (constrained beam search).

`train_and_report` is the pipeline's pre-training stage: train (train/pretrain.py), then measure.
`write_report` puts the stages side by side in pretrain/report.{json,md} and draws the loss
curves per layer into pretrain/loss.png.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from onereason import rundir
from onereason.bench.lists import recommend_next, sample_prompts
from onereason.corpus.build import LAYERS
from onereason.corpus.item_layer import sid_to_title, title_to_sid
from onereason.corpus.user_layer import EvalPrompts
from onereason.decoding.constrained import left_pad, recommend
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists
from onereason.rundir import save_figure, write_text
from onereason.train import pretrain
from onereason.train.loop import Sample, causal_lm_loss, collate
from onereason.train.pretrain import ReportConfig


TITLE_TO_SID_BEAMS = 5  # R0 title → SID: exact match of the best of a small constrained beam


def token_f1(pred: str, truth: str) -> float:
    """Bag-of-words F1 over lower-cased word tokens (SQuAD style)."""
    p, t = re.findall(r"\w+", pred.lower()), re.findall(r"\w+", truth.lower())
    common = sum((Counter(p) & Counter(t)).values())
    if not p or not t or not common:
        return 0.0
    prec, rec = common / len(p), common / len(t)
    return 2 * prec * rec / (prec + rec)


@torch.no_grad()
def generate_titles(model, tok, sid, items: list[str], batch_size: int = 32, max_new_tokens: int = 48) -> list[str]:
    """Greedy continuation of "<SID> is" up to <eos>; the trailing period dropped."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(items), batch_size):
        prompts = [[tok.bos_token_id, *tok.encode(sid_to_title(sid.codec.item_text(i)), add_special_tokens=False)]
                   for i in items[start:start + batch_size]]
        ids, attn = left_pad(prompts, tok.pad_token_id)
        width = ids.shape[1]
        gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        for row in gen[:, width:].tolist():
            text = tok.decode([t for t in row if t not in (tok.eos_token_id, tok.pad_token_id)])
            out.append(text.strip().removesuffix("."))
    return out


def perception(model, tok, sid, title_of: dict[str, str], items: list[str], cfg: ReportConfig) -> dict:
    """SID → title token-F1 and title → SID exact-match accuracy over `items`."""
    titles = [title_of[i] for i in items]
    f1 = [token_f1(p, t) for p, t in zip(generate_titles(model, tok, sid, items, cfg.batch_size), titles)]
    domains = [sid.codec.item_domain[i] for i in items]
    prompts = [[tok.bos_token_id, *tok.encode(title_to_sid(t), add_special_tokens=False), sid.begin_id[d]]
               for t, d in zip(titles, domains)]
    recs = recommend(model, prompts, domains, sid, tok.pad_token_id, k=1, num_beams=TITLE_TO_SID_BEAMS, batch_size=cfg.batch_size)
    exact = [bool(r.items) and r.items[0] == i for r, i in zip(recs, items)]
    return {"sid_to_title_f1": float(np.mean(f1)), "title_to_sid_acc": float(np.mean(exact)), "n": len(items)}


@torch.no_grad()
def heldout_perplexity(model, tok, run_dir: Path, context: int) -> float | None:
    """exp(mean next-token cross-entropy) over the held-out general-text documents."""
    path = run_dir / rundir.GENERAL_TEXT
    if not path.exists():
        return None
    g = pd.read_parquet(path)
    windows = []
    for text in g.loc[g["split"] == "heldout", "text"]:
        ids = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False)]
        windows += [ids[s:s + context] for s in range(0, len(ids), context) if len(ids[s:]) > 1]
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(1, 2, device=device)
    for s in range(0, len(windows), 8):
        batch = collate([Sample(w, [1] * len(w)) for w in windows[s:s + 8]], tok.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels, groups = batch.pop("labels"), batch.pop("groups")
        _, stats = causal_lm_loss(model(**batch).logits, labels, groups, 1)
        total += stats
    return math.exp(float(total[0, 0] / total[0, 1]))


def stage_metrics(model, run_dir: Path, cfg: ReportConfig, progress: bool = False) -> dict:
    heldout = json.loads((run_dir / rundir.HELDOUT_ITEMS).read_text())
    rng = np.random.default_rng(cfg.seed)
    tok, sid = load_sid_tokens(run_dir)
    items = pd.read_parquet(run_dir / rundir.ITEMS)
    title_of = dict(zip(items["item_id"], items["title"]))
    stated = sorted(set(sid.codec.item_ids) - set(heldout))
    pick = lambda xs: sorted(rng.choice(xs, size=min(cfg.r0_items, len(xs)), replace=False).tolist()) if xs else []
    out = {"r0_heldout": perception(model, tok, sid, title_of, pick(heldout), cfg) if heldout else None,
           "r0_stated": perception(model, tok, sid, title_of, pick(stated), cfg),
           "perplexity": heldout_perplexity(model, tok, run_dir, cfg.ppl_context)}
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", rundir.prompt_items(run_dir), cfg.users,
                       cfg.seed)
    out["next_item"] = {"split": "valid", "users": len(p.users), "beams": cfg.beams,
                        **next_item_at_10(model, tok, sid, p, cfg, progress)}
    return out


def next_item_at_10(model, tok, sid, p: EvalPrompts, cfg: ReportConfig, progress: bool = False) -> dict[str, float]:
    """Recall@10 and NDCG@10 of the model's beam on these prompts."""
    recs, domains = recommend_next(model, tok, sid, p, cfg.beams, cfg.batch_size, progress)
    res = evaluate_lists([r.items for r in recs], p.truths, [10], domains)["all"]
    return {"recall@10": res["recall@10"], "ndcg@10": res["ndcg@10"]}


def valid_ndcg(run_dir: Path, cfg: ReportConfig) -> Callable[[torch.nn.Module], float]:
    """NDCG@10 on a seeded sample of `select_users` valid users: what picks a stage's best weights."""
    tok, sid = load_sid_tokens(run_dir)
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", rundir.prompt_items(run_dir),
                       cfg.select_users, cfg.seed)

    def score(model: torch.nn.Module) -> float:
        model.eval()
        return next_item_at_10(model, tok, sid, p, cfg)["ndcg@10"]
    return score


def train_and_report(config: pretrain.PretrainConfig, run_dir: Path, stage: str, progress: bool = True) -> dict:
    """Stage `pretrain <stage>`: train it (train/pretrain.py), measure it, update pretrain/report.*."""
    stats = pretrain.run(config, run_dir, stage, progress=progress,
                         measure=lambda model: stage_metrics(model, run_dir, config.report, progress=progress),
                         score=valid_ndcg(run_dir, config.report) if getattr(config, stage).selections else None)
    if PartialState().is_main_process:  # under `accelerate launch` one process writes the report
        write_report(run_dir, list(pretrain.STAGES), list(LAYERS))
    return stats


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(run_dir: Path, stages: list[str], layers: list[str]) -> dict:
    """pretrain/report.json + report.md (stages side by side) + loss.png (loss per layer)."""
    root = run_dir / "pretrain"
    done = {s: json.loads((root / s / "summary.json").read_text()) for s in stages
            if (root / s / "summary.json").exists()}
    rows = [
        ("tokens trained", lambda m, s: f"{sum(s['tokens_per_layer'].values()):,}"),
        ("tokens/s", lambda m, s: f"{s['tokens_per_s']:,.0f}"),
        ("R0 held-out: SID→title F1", lambda m, s: _fmt((m["r0_heldout"] or {}).get("sid_to_title_f1"))),
        ("R0 held-out: title→SID acc", lambda m, s: _fmt((m["r0_heldout"] or {}).get("title_to_sid_acc"))),
        ("R0 stated: SID→title F1", lambda m, s: _fmt(m["r0_stated"]["sid_to_title_f1"])),
        ("R0 stated: title→SID acc", lambda m, s: _fmt(m["r0_stated"]["title_to_sid_acc"])),
        ("held-out text perplexity", lambda m, s: _fmt(m["perplexity"])),
        ("next-item Recall@10 (valid)", lambda m, s: _fmt(m["next_item"]["recall@10"])),
        ("next-item NDCG@10 (valid)", lambda m, s: _fmt(m["next_item"]["ndcg@10"])),
    ]
    lines = ["# Pre-training stages", "", "| metric | " + " | ".join(done) + " |", "|---" * (len(done) + 1) + "|"]
    for name, f in rows:
        lines.append(f"| {name} | " + " | ".join(f(s["metrics"], s) for s in done.values()) + " |")
    lines += ["", "Budget per layer (tokens drawn, after packing):", ""]
    lines += [f"- {s}: " + ", ".join(f"{k} {v:,}" for k, v in d["tokens_per_layer"].items() if v) for s, d in done.items()]
    lines += ["", "![loss per layer](loss.png)", ""]
    write_text(root / "report.md", "\n".join(lines))
    write_text(root / "report.json", json.dumps(done, indent=2))
    _plot(root, list(done), layers)
    return done


def _plot(root: Path, stages: list[str], layers: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    offset = 0
    for s in stages:
        log = [json.loads(line) for line in (root / s / "train_log.jsonl").read_text().splitlines()]
        for i, layer in enumerate(layers):
            pts = [(offset + r["step"], r[f"loss/{layer}"]) for r in log if f"loss/{layer}" in r]
            if pts:
                ax.plot(*zip(*pts), color=f"C{i}", label=layer)
        ax.axvline(offset, color="gray", lw=0.5)
        ax.text(offset, 1.0, f" {s}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        offset += log[-1]["step"] if log else 0
    handles = {h.get_label(): h for h in ax.get_lines() if not h.get_label().startswith("_")}
    ax.legend(handles.values(), handles.keys(), loc="upper right")
    ax.set_xlabel("optimizer step (stages concatenated)")
    ax.set_ylabel("cross-entropy per token")
    ax.set_yscale("log")
    ax.set_title("pre-training loss per layer")
    save_figure(fig, root / "loss.png", dpi=110)
