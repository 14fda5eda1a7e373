"""Specialize-then-unify on a multi-domain run (default runs/mix): one GRPO run per domain (the
experts), one GRPO run on all domains mixed (thinking, and one non-thinking), RFT and MOPD
unification of the experts, then one table (64 beams; Recall@10, NDCG@10, pass@4, pass@64, per
domain) with SFT and every RL model, written to runs/<name>/rl/eval_unify.{json,md,png}, and every
method minus mixed-domain RL per user with paired-bootstrap 95% intervals. Stages whose model
exists are not re-run.

    python bench/rl_unify.py [--run-dir runs/mix] [--steps 60] [--users 500] [--rft-any-format]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onereason.bench import rl_eval
from onereason.itemic.sid import load_sid_tokens
from onereason.rl import grpo
from onereason.rl.grpo import GrpoConfig
from onereason.rl.unify import MopdConfig, RftConfig, run_mopd, run_rft


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=Path("runs/mix"))
    ap.add_argument("--steps", type=int, default=60, help="GRPO steps per expert; the mixed run gets the sum")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--rft-any-format", action="store_true", help="RFT keeps hits whatever their trace format")
    a = ap.parse_args()
    _, sid = load_sid_tokens(a.run_dir)
    domains = sorted(sid.codec.domains)
    done = lambda out: (a.run_dir / out / "model" / "config.json").exists()  # noqa: E731
    experts = {d: f"rl/expert-{d}/model" for d in domains}
    for d in domains:
        if not done(f"rl/expert-{d}"):
            grpo.run(GrpoConfig(out=f"rl/expert-{d}", domains=[d], steps=a.steps), a.run_dir)
    if not done("rl/mixed"):  # the same number of rollouts as all experts together
        grpo.run(GrpoConfig(out="rl/mixed", steps=a.steps * len(domains)), a.run_dir)
    if not done("rl/mixed-nothink"):
        grpo.run(GrpoConfig(out="rl/mixed-nothink", mode="non-thinking", steps=a.steps * len(domains)), a.run_dir)
    if not done("rl/rft"):
        run_rft(RftConfig(experts=experts, require_format=not a.rft_any_format), a.run_dir)
    if not done("rl/mopd"):
        run_mopd(MopdConfig(experts=experts, steps=a.steps * len(domains)), a.run_dir)
    m = rl_eval.Method
    report = rl_eval.run(rl_eval.RlEvalConfig(sample={"max_users": a.users}, out="rl/eval_unify", methods=[
        m(name="SFT non-thinking", model="sft/model", mode="non-thinking"),
        m(name="SFT thinking", model="sft/model", mode="thinking"),
        m(name="RL non-thinking (mixed)", model="rl/mixed-nothink/model", mode="non-thinking"),
        m(name="mixed-domain RL", model="rl/mixed/model", mode="thinking"),
        m(name="RL race (mixed)", model="rl/mixed/model", mode="race"),
        m(name="per-domain experts", model=experts, mode="thinking"),
        m(name="RFT-unified", model="rl/rft/model", mode="thinking"),
        m(name="MOPD-unified", model="rl/mopd/model", mode="thinking")]), a.run_dir)
    print(rl_eval.markdown(report))
    diffs = rl_eval.compare(a.run_dir / "rl/eval_unify_recommendations.jsonl", "mixed-domain RL")
    print(rl_eval.compare_markdown(diffs, "mixed-domain RL"))
    print(json.dumps({k: v["metrics"]["all"] for k, v in report["methods"].items()}, indent=1))


if __name__ == "__main__":
    main()
