"""Reasoning SFT on the tiny run: traces cite only history items, the loss mask covers the
assistant turn only, a malformed trace is rejected by sample id, two-stage generation cites
history items only, and the eval reports every mode."""

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from onereason.corpus.user_layer import HistoryText
from onereason.data.histories import user_histories
from onereason.decoding.two_stage import CitationLogitsProcessor, close_trace
from onereason.itemic.sid import build_trie, load_sid_tokens
from onereason.pipeline import RunConfig
from onereason.reasoning.interests import Interests
from onereason.reasoning.personas import Personas, user_features
from onereason.reasoning.sft_data import load_teacher
from onereason.reasoning.traces import TraceError, check_trace, drift_to, hypothesis_traces, split_trace
from onereason.train import sft
from onereason.train.loop import causal_lm_loss, collate


def test_sft_data_has_every_task_and_valid_traces(tiny_run):
    run_dir, summary = tiny_run
    df = pd.read_parquet(run_dir / "reasoning" / "sft.parquet")
    assert set(df["task"]) == {"R0", "R1", "R2", "R3"}
    r3 = df[df["task"] == "R3"]
    assert 0 < r3["think"].mean() < 1  # both modes, default ratio 0.5
    assert all(a.startswith("\n\n</think>\n\n") for a in r3.loc[~r3["think"], "assistant"])
    _, sid = load_sid_tokens(run_dir)
    sft.check_samples(df, sid.codec)  # every thinking trace cites its own history only
    hists = user_histories(pd.read_parquet(run_dir / "data" / "interactions.parquet"), ("train",))
    for sample_id, assistant in r3[["sample_id", "assistant"]].itertuples(index=False):
        _, user, t = sample_id.rsplit("-", 2)
        target = sid.codec.parse(assistant.split("</think>")[-1])[0]
        assert target == hists[user][int(t)].item  # R3 targets are train-split items only


def test_personas_are_20_named_prototypes_assigned_from_history(tiny_run):
    run_dir, _ = tiny_run
    personas = Personas.load(run_dir / "reasoning" / "personas.json")
    interests = Interests.load(run_dir / "reasoning" / "interests.json")
    assert len(personas.names) == 20 and len(set(personas.names)) == 20
    assert sum(s["users"] for s in personas.stats) == 80
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    hist = next(iter(user_histories(inter, ("train",)).values()))
    p = personas.assign(user_features(hist, interests, dict(zip(items["item_id"], items["brand"])))[None])
    assert 0 <= int(p[0]) < 20


def test_loss_mask_covers_the_assistant_turn_only(tiny_run):
    run_dir, _ = tiny_run
    df = pd.read_parquet(run_dir / "reasoning" / "sft.parquet").groupby("task").head(2)
    tok, _ = load_sid_tokens(run_dir)
    samples = sft.to_samples(df, tok)
    batch = collate(samples, tok.pad_token_id)
    prompt_lens = [len(tok(u, add_special_tokens=False)["input_ids"]) for u in df["user"]]
    logits = torch.randn(*batch["input_ids"].shape, len(tok), requires_grad=True)
    loss, _ = causal_lm_loss(logits, batch["labels"], batch["groups"], len(sft.GROUPS))
    loss.backward()
    grad = logits.grad.abs().sum(-1)  # [B, T]: position t predicts token t+1
    for row, n in enumerate(prompt_lens):
        assert grad[row, : n - 1].sum() == 0  # predicting prompt tokens costs nothing
        assert (grad[row, n - 1: len(samples[row].ids) - 1] > 0).all()  # every assistant token is learned
        assert tok.decode(samples[row].ids[n:]).startswith(("\n\n</think>", "\n"))


def test_replayed_text_and_windows_are_their_shares_of_the_tokens(tiny_run):
    """Token-layer text is its share and fully learned; User-layer windows are theirs, whole, learned on their
    items only (never marks), as pre-training learns them."""
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    marks = HistoryText(sid, tok).mark_ids
    chat = sft.to_samples(pd.read_parquet(run_dir / "reasoning" / "sft.parquet"), tok)
    assert sft.with_replay(chat, run_dir, sft.SftConfig(text_share=0.0), marks) == chat
    mixed = sft.with_replay(chat, run_dir, sft.SftConfig(text_share=0.25, text_context=64), marks)
    assert mixed[: len(chat)] == chat
    text = mixed[len(chat):]
    n_chat, n_text = sum(len(s.ids) for s in chat), sum(len(s.ids) for s in text)
    assert abs(n_text / (n_chat + n_text) - 0.25) < 0.01
    assert all(1 < len(s.ids) <= 64 and all(s.mask) for s in text)
    assert {g for s in text for g in s.groups} == {sft.GROUPS.index("text")}
    token_layer = {tuple(d) for d in pd.read_parquet(run_dir / "corpus" / "token.parquet")["ids"]}
    first = [s for s in text if s.ids[0] == tok.bos_token_id]  # a document's first piece starts it
    assert first and all(any(d[: len(s.ids)] == tuple(s.ids) for d in token_layer) for s in first[:5])

    both = sft.with_replay(chat, run_dir, sft.SftConfig(text_share=0.1, user_share=0.3), marks)
    user = [s for s in both[len(chat):] if s.groups[0] == sft.GROUPS.index("user")]
    n_all, n_user = sum(len(s.ids) for s in both), sum(len(s.ids) for s in user)
    assert abs(n_user / n_all - 0.3) < 0.03
    windows = {tuple(d) for d in pd.read_parquet(run_dir / "corpus" / "user.parquet")["ids"]}
    for s in user:
        assert tuple(s.ids) in windows  # whole windows, never cut
        learned = [t for t, m in zip(s.ids, s.mask) if m]
        assert learned and not set(learned) & set(marks.tolist()) and s.mask[0] == 0
    with pytest.raises(ValueError, match="text_share \\+ sft.user_share = 1: the chat samples"):
        sft.SftConfig(text_share=0.5, user_share=0.5)


def test_malformed_trace_is_rejected_with_its_sample_id(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("sft", "pretrain", "corpus", "eval"))
    path = copy / "reasoning" / "sft.parquet"
    df = pd.read_parquet(path)
    bad = df.index[(df["task"] == "R3") & df["think"]][0]
    df.loc[bad, "assistant"] = df.loc[bad, "assistant"].replace("Transition:", "Guess:")
    df.to_parquet(path)
    cfg = RunConfig.model_validate_json((copy / "config.json").read_text()).sft
    with pytest.raises(TraceError, match=df.loc[bad, "sample_id"]):
        sft.run(cfg, copy, progress=False)
    assert not (copy / "sft" / "model").exists()

    # a trace that cites its own target is rejected too
    df = pd.read_parquet(run_dir / "reasoning" / "sft.parquet")
    row = df[(df["task"] == "R3") & df["think"]].iloc[0]
    target_sid = row["assistant"].split("</think>\n\n")[1].replace("<|im_end|>", "")
    df.loc[row.name, "assistant"] = row["assistant"].replace("\n</think>", f" {target_sid}\n</think>", 1)
    df.to_parquet(path)
    with pytest.raises(TraceError, match=f"{row['sample_id']}: trace cites (the target|.*not in the history)"):
        sft.run(cfg, copy, progress=False)

    # and a transition with no known reason
    df = pd.read_parquet(run_dir / "reasoning" / "sft.parquet")
    df.loc[row.name, "assistant"] = re.sub(r"Transition: \w+:", "Transition: vibes:", row["assistant"])
    df.to_parquet(path)
    with pytest.raises(TraceError, match=f"{row['sample_id']}: the transition must start with one of"):
        sft.run(cfg, copy, progress=False)


def test_sft_trains_and_eval_reports_all_modes(tiny_run):
    run_dir, summary = tiny_run
    log = [json.loads(l) for l in (run_dir / "sft" / "train_log.jsonl").read_text().splitlines()]
    assert log and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    assert any("loss/R3 thinking" in row for row in log) and any("loss/R0" in row for row in log)
    assert any("loss/text" in row for row in log)  # Token-layer text replayed for language retention
    res = json.loads((run_dir / "sft" / "eval.json").read_text())
    oracle = "oracle trace n=3 (knows the target's interest)"
    assert set(res["methods"]) == {"pre-trained", "SFT non-thinking", "SFT thinking n=1", "SFT thinking n=3", oracle}
    assert res["reasoning"][oracle]["transition_names_target_interest"] == 1.0  # hindsight picks the truth
    assert res["reasoning"][oracle]["interests_list_target_interest"] == 1.0
    for name, m in res["methods"].items():
        assert m["all"]["sid_validity@10"] == 1.0, name
    for name, r in res["reasoning"].items():
        assert r.get("cited_in_history") in (None, 1.0), name  # the citation constraint
        assert np.isfinite(r["delta_ll"])
    assert (run_dir / "sft" / "eval.md").read_text().count("| SFT") == 3


def test_trace_out_of_budget_drops_its_unfinished_citation(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    end_think = tok.convert_tokens_to_ids("</think>")
    item = sid.codec.item_ids[0]
    words = tok.encode(" see", add_special_tokens=False)
    done = words + sid.ids(item)
    assert close_trace(done + words + sid.ids(item)[:2], sid, end_think) == done + words + [end_think]
    assert close_trace(done, sid, end_think) == done + [end_think]


def test_citation_processor_allows_only_history_items(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    history = sid.codec.item_ids[:3]
    proc = CitationLogitsProcessor(sid, 1, [build_trie([sid.ids(i) for i in history])], [tok.pad_token_id])
    begin = sid.ids(history[0])[0]
    allowed = lambda gen: set(torch.nonzero(proc(torch.tensor([[0, *gen]]), torch.zeros(1, len(tok)))[0] > -1e9)  # noqa: E731
                              .flatten().tolist())
    free = allowed([])
    assert begin in free and not free & set(np.concatenate(sid.code_ids).tolist())  # codes only inside a citation
    assert allowed([begin]) == {sid.ids(i)[1] for i in history}
    walk = [begin]
    for tok_id in sid.ids(history[1])[1:]:
        assert tok_id in allowed(walk)
        walk.append(tok_id)
    assert allowed(walk) == free  # the citation is closed: free text again


def test_bad_sft_config_is_named(tiny_run, tmp_path):
    from pydantic import ValidationError

    from onereason.reasoning.sft_data import SftDataConfig, build

    with pytest.raises(ValidationError, match="hypotheses"):
        SftDataConfig(hypotheses=[0, 3])
    with pytest.raises(ValidationError, match="think_ratio"):
        SftDataConfig(think_ratio={"movies": 1.5})
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("sft", "pretrain", "corpus", "eval", "model"))
    before = (copy / "reasoning" / "sft.parquet").read_bytes()
    with pytest.raises(ValueError, match=r"think_ratio: unknown domain\(s\) \['books'\]"):
        build(SftDataConfig(think_ratio={"books": 0.5}), copy, progress=False)
    assert (copy / "reasoning" / "sft.parquet").read_bytes() == before


def test_hypothesis_traces_move_the_transition_to_each_other_listed_interest():
    trace = ("Persona: steady · jars · focused (4 items).\nInterests: 1. jars bottles; 2. glassware; 3. testing.\n"
             "Transition: recency: stays with jars bottles, the interest of the last item.")
    got = hypothesis_traces(trace)
    assert got[0] == trace and len(got) == 3  # the model's own, then the two interests its transition skips
    for t, name in zip(got[1:], ["glassware", "testing"]):
        head, listed, transition = split_trace(t)
        assert head == "Persona: steady · jars · focused (4 items)."
        assert listed == ["jars bottles", "glassware", "testing"] and transition == drift_to(name)
    assert hypothesis_traces("Persona: x.\nTransition: drift: moves to a new interest, y.") == [
        "Persona: x.\nTransition: drift: moves to a new interest, y."]  # no Interests line: alone


def test_foresight_trace_is_well_formed_and_moves_to_its_first_hypothesis(tiny_run):
    """The teacher's trace without the target: three parts, only history items cited, n interests of the
    domain listed, and the transition names the first."""
    run_dir, _ = tiny_run
    teacher = load_teacher(run_dir)
    hists = user_histories(pd.read_parquet(run_dir / "data" / "interactions.parquet"), ("train",))
    for events in list(hists.values())[:10]:
        trace = teacher.foresight_trace(events, 3, "movies")
        check_trace(trace, [e.item for e in events], teacher.codec)
        _, listed, transition = split_trace(trace)
        assert len(listed) == 3 and listed[0] in transition
