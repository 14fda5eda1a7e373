"""The bench report: results.json, report.md and a self-contained report.html (the same text with
the plots inlined), and `compare` for several runs side by side.

Plots: NDCG@10 per method and domain; thinking vs non-thinking vs race per model; the stage
progression pre-trained → SFT → RL (R3, R0, perplexity); Recall@k curves.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import markdown

from onereason.bench.world import plot_value, value_table
from onereason.rundir import save_figure, write_text

OURS = ("pre-trained", "SFT", "RL")
MODES = ("non-thinking", "thinking", "race")
BASELINES = {"SASRec": "SASRec", "SASRec + successors": "SASRec + successors", "TIGER-style": "TIGER-style",
             "LC-Rec-style": "LC-Rec-style non-thinking", "MostPopular": "MostPopular",
             "Markov chain": "Markov chain"}  # ratio column → method name in the results


def metric(r: dict, method: str, name: str, group: str = "all") -> float | None:
    """One metric of one method in a results dict; None when absent."""
    return r["methods"].get(method, {}).get("metrics", {}).get(group, {}).get(name)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _interval(x: list[float]) -> str:
    return f"{x[0]:+.4f} [{x[1]:+.4f}, {x[2]:+.4f}]"


def _table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(_f(v) for v in r) + " |" for r in rows], ""]


def ratios(results: dict) -> dict:
    """NDCG@10 of our best method over each trained baseline, overall and per domain. "Our best" is
    the method with the highest NDCG@10 on the selection sample (valid), one choice for every group."""
    out: dict = {}
    methods, chosen = results["methods"], results["selection"]["ndcg@10"]
    if not chosen:
        return out
    best = max(chosen, key=chosen.get)
    for group in ["all", *results["domains"]]:
        if group not in methods[best]["metrics"]:
            continue
        row = {"best": best, "ndcg@10": methods[best]["metrics"][group]["ndcg@10"]}
        for col, method in BASELINES.items():
            v = metric(results, method, "ndcg@10", group)
            if v:
                row[col] = row["ndcg@10"] / v
        out[group] = row
    return out


def markdown_text(r: dict) -> str:
    ks, groups = r["ks"], ["all", *r["domains"]] if len(r["domains"]) > 1 else ["all"]
    lines = [f"# OneReason-Bench: {r['run']}", "",
             f"{r['split']} split, {r['users']} users (a seeded sample shared by every method), {r['beams']} candidates "
             f"per user; {r['protocol']}. Domains: {', '.join(r['domains'])}.", ""]
    lines += ["## R3 recommendation", ""]
    for g in groups:
        head = ["method", "n"] + [f"{m}@{k}" for m in ("ndcg", "recall") for k in (10, 20) if k in ks] + \
               [f"pass@{k}" for k in (1, 4, 32, 64) if k in ks] + [f"position1_pass@{max(ks)}", f"sid_validity@{max(ks)}"]
        rows = []
        for name, m in sorted(r["methods"].items(), key=lambda x: -x[1]["metrics"].get(g, {}).get("ndcg@10", 0)):
            x = m["metrics"].get(g)
            if x:
                rows.append([name, x["n"], *[x.get(h) for h in head[2:]]])
        lines += [f"### {g}", "", *_table(head, rows)]
    lines += ["![NDCG@10 per method and domain](r3_bars.png)", "", "![Recall@k](recall_curves.png)", ""]
    if r["ratios"]:
        sel = r["selection"]
        lines += ["### Our best method over the baselines (NDCG@10)", "",
                  f"Our best is chosen before the {r['split']} numbers are read: the highest NDCG@10 on {sel['users']} "
                  f"{sel['split']} users.", "",
                  *_table([f"our method ({sel['split']})", "NDCG@10"], sorted(sel["ndcg@10"].items(), key=lambda x: -x[1])),
                  *_ratio_table("group", r["ratios"].items())]
    if r.get("paired"):
        lines += [f"### {r['paired']['best']} minus each baseline, paired per user (mean [95% bootstrap interval])", "",
                  *_table(["baseline", "NDCG@10", "Recall@10"],
                          [[b, *[_interval(x[c]) for c in ("ndcg@10", "recall@10")]] for b, x in r["paired"]["vs"].items()])]
    if r["reasoning"]:
        lines += ["## Thinking vs non-thinking", "",
                  "delta_ll = log p(target | prompt + trace) − log p(target | non-thinking prompt), mean over users.", ""]
        head = ["model", *[f"NDCG@10 {m}" for m in MODES], "delta_ll", "delta_ll > 0", "history-citation rate",
                "3-part traces", "trace tokens"]
        rows = [[n, *[metric(r, f"{n} {m}", "ndcg@10") for m in MODES],
                 x["delta_ll"], x["delta_ll_positive_share"], x["history_citation_rate"], x["traces_with_all_parts"],
                 x["trace_tokens_mean"]] for n, x in r["reasoning"].items()]
        lines += [*_table(head, rows), "![thinking vs non-thinking](thinking.png)", ""]
        for n, ts in r["traces"].items():
            if ts:
                lines += [f"A trace of {n} (user {ts[0]['user_id']}, target {ts[0]['target']}):", "", "```",
                          ts[0]["trace"], "```", ""]
    lines += value_lines(r.get("value"))
    lines += ["## R0 perception", "", "SID → title token-F1 (greedy), Describe <SID> → description token-F1 and, with "
              "a judge endpoint, information-point F1 against the item text; title → SID exact match. On items whose "
              "text pre-training held out and on items it stated.", ""]
    doms = r["domains"] if len(r["domains"]) > 1 else []
    rows = [[n, g, x["n"], x["sid_to_title_f1"]["all"], x.get("description_token_f1", {}).get("all"),
             x.get("info_point", {}).get("f1"), x["title_to_sid_acc"]["all"], *[x["title_to_sid_acc"].get(d) for d in doms]]
            for n, parts in r["r0"].items() for g, x in parts.items() if isinstance(x, dict) and "n" in x]
    lines += _table(["model", "items", "n", "SID→title F1", "description F1", "info-point F1", "title→SID acc",
                     *[f"title→SID {d}" for d in doms]], rows)
    if r["r1"]:
        lines += ["## R1 relations", "", "The model's label against the dataset's own lists (`listed`: complement / "
                  "substitute, and random same-domain pairs on neither list as unrelated) and against the run's judge "
                  "(`judge`), on pairs the SFT data never showed.", ""]
        rows = [[n, s, x["pairs"], x["accuracy"]["all"], x["parsed"],
                 ", ".join(f"{c} {v:.2f}" for c, v in x["recall_per_class"].items()),
                 ", ".join(f"{c} {v}" for c, v in x["predicted"].items())]
                for n, srcs in r["r1"].items() for s, x in srcs.items() if isinstance(x, dict)]
        lines += _table(["model", "labels", "pairs", "accuracy", "parsed", "recall per class", "predicted"], rows)
    if r["r2"]:
        lines += ["## R2 interest expansion", "", "Interests named for the next window (the valid and test items) "
                  "against the interests of those items.", ""]
        rows = [[n, x["users"], x["precision"]["all"], x["recall"]["all"], x["f1"]["all"], *[x["f1"].get(d) for d in doms]]
                for n, x in r["r2"].items()]
        lines += _table(["method", "users", "precision", "recall", "F1", *[f"F1 {d}" for d in doms]], rows)
    if r.get("r2_choice"):
        first = next(iter(r["r2_choice"].values()))
        n = first["n"]
        lines += ["### R2 as a choice", "", f"Every interest of the next item's domain scored as the answer's first entry, "
                  f"ranked by the model's probability; top-1 and recall@{n} against the next item's interest "
                  f"({first['users']} users), beside two rules.", ""]

        def row(label: str, x: dict) -> list:
            return [label, x["top1"]["all"], x[f"recall@{n}"]["all"], x.get("p_truth", {}).get("all")]

        rows = [row(f"{m} (scored choice)", c["methods"]["model (scored choice)"]) for m, c in r["r2_choice"].items()]
        rows += [row(name, x) for name, x in first["methods"].items() if name != "model (scored choice)"]
        lines += _table(["method", "top-1", f"recall@{n}", "P(true interest)"], rows)
    lines += ["## Language retention", "", *_table(["model", "held-out text perplexity"],
                                                   [[n, v] for n, v in r["perplexity"].items()])]
    lines += ["## Stages", "", "![pre-trained → SFT → RL](stages.png)", "", "## Baselines: tuning budget", "",
              "Every grid point is trained on the train split; the valid split's NDCG@10 picks one.", ""]
    rows = [[n, ", ".join(f"{g['lr']:g} → {g['valid_ndcg@10']:.4f}" for g in b.get("grid", [])) or "none",
             f"{b['chosen_lr']:g}" if "chosen_lr" in b else None, b.get("epoch_budget", b.get("epochs")),
             b.get("best_epoch"), round(sum(g.get("seconds", 0) for g in b.get("grid", [])) or b.get("seconds") or 0)]
            for n, b in r["baselines"].items()]
    lines += _table(["baseline", "lr grid → valid NDCG@10", "chosen lr", "epoch budget", "best epoch", "train s"], rows)
    return "\n".join(lines) + "\n"


def value_lines(v: dict | None) -> list[str]:
    """The business-value section (synthetic worlds): revenue beside recall, and the slow path's ROI."""
    if not v:
        return []
    k = v["k"]
    lines = ["## Business value", "", f"From the synthetic world's truth: expected revenue@{k} = Σ over the top {k} "
             "of P(the user converts) × the item's price or bid; hit value = the value of the hit items; sponsored = "
             f"the share of ad items. Δ = minus {v['reference']} per user (mean [95% paired bootstrap interval]).", ""]
    lines += value_table(v) + ["", "![expected revenue against recall](value.png)", ""]
    if "serving" in v:
        s, served = v["serving"]["slow_path"], v["serving"]["methods"]
        lines += [f"The slow path's ROI, from a replay of {s['users']} test users through the service "
                  f"(bench/serve_value.py, {s['model']}): (expected revenue@{k} summed over the users with cached "
                  f"traces − with the fast path alone) / the slow path's {s['seconds']} s ({s['cost_unit']}).", ""]
        lines += _table(["served", f"Recall@{k}", f"revenue@{k}", "revenue per slow-path second"],
                        [[m, x[f"recall@{k}"], x[f"revenue@{k}"], s["roi"].get(m)] for m, x in served.items()])
    return lines


def _ratio_table(key: str, rows) -> list[str]:
    """(label, ratios row) pairs as the "our best over the baselines" table."""
    return _table([key, "our best", "NDCG@10", *[f"÷ {c}" for c in BASELINES]],
                  [[label, x.get("best"), x.get("ndcg@10"), *[x.get(c) for c in BASELINES]] for label, x in rows])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float | None]], rotate: bool = True) -> None:
    """One group of bars per label, one bar per series (missing values drawn as 0)."""
    w = 0.8 / len(series)
    for j, (name, values) in enumerate(series.items()):
        ax.bar([i + j * w for i in range(len(labels))], [v or 0 for v in values], w, label=name)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(labels))], labels,
                  **({"rotation": 35, "ha": "right", "fontsize": 8} if rotate else {}))


def plot_bars(r: dict, png: Path) -> None:
    plt = _plt()
    groups = ["all", *r["domains"]] if len(r["domains"]) > 1 else ["all"]
    names = sorted(r["methods"], key=lambda n: -(metric(r, n, "ndcg@10") or 0))
    fig, ax = plt.subplots(figsize=(max(7, 0.5 * len(names) * len(groups)), 4.2))
    _grouped_bars(ax, names, {g: [metric(r, n, "ndcg@10", g) for n in names] for g in groups})
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"R3 NDCG@10 per method ({r['users']} {r['split']} users)")
    ax.legend(fontsize=8)
    save_figure(fig, png, dpi=100)


def plot_recall_curves(r: dict, png: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.get_cmap("tab20").colors
    for i, (n, m) in enumerate(r["methods"].items()):
        ks = [k for k in r["ks"] if f"recall@{k}" in m["metrics"]["all"]]
        ax.plot(ks, [m["metrics"]["all"][f"recall@{k}"] for k in ks], marker="o", ms=3, label=n,
                ls="-" if m["kind"] == "ours" else "--", color=colors[i % len(colors)])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_title("Recall@k (solid: ours, dashed: baselines)")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, png, dpi=100)


def plot_thinking(r: dict, png: Path) -> None:
    plt = _plt()
    models = list(r["reasoning"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name in zip(axes, ("ndcg@10", "recall@10")):
        _grouped_bars(ax, models, {mode: [metric(r, f"{n} {mode}", name) for n in models] for mode in MODES},
                      rotate=False)
        ax.set_title(name)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", fontsize=8, ncol=3)
    fig.suptitle("thinking vs non-thinking vs race")
    save_figure(fig, png, dpi=100, rect=(0, 0, 1, 0.93))


def plot_stages(r: dict, png: Path) -> None:
    plt = _plt()
    stages = [s for s in OURS if s in r["perplexity"]]
    best = {s: max((m["metrics"]["all"].get("ndcg@10", 0) for n, m in r["methods"].items() if m["model"] == s),
                   default=0) for s in stages}
    r0 = {s: r["r0"].get(s, {}).get("held-out", r["r0"].get(s, {}).get("stated", {})) for s in stages}
    panels = [("R3 NDCG@10 (best mode)", [best[s] for s in stages]),
              ("R0 title→SID acc (held-out items)", [r0[s].get("title_to_sid_acc", {}).get("all") or 0 for s in stages]),
              ("held-out text perplexity", [r["perplexity"][s] or 0 for s in stages])]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (title, vals) in zip(axes, panels):
        ax.plot(stages, vals, marker="o")
        ax.set_title(title, fontsize=9)
    axes[2].set_yscale("log")
    fig.suptitle("stage progression")
    save_figure(fig, png, dpi=100)


def inline_html(md: str, root: Path, title: str) -> str:
    """Markdown to one HTML file, every image embedded as base64."""
    body = markdown.markdown(md, extensions=["tables", "fenced_code"])

    def embed(m: re.Match) -> str:
        path = root / m.group(1)
        if not path.exists():
            return m.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 7px}"
             "th{background:#f3f3f3}img{max-width:100%}pre{background:#f7f7f7;padding:8px;white-space:pre-wrap}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>" \
           f"<body>{body}</body></html>\n"


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(results, indent=1))
    plot_bars(results, out / "r3_bars.png")
    plot_recall_curves(results, out / "recall_curves.png")
    if results["reasoning"]:
        plot_thinking(results, out / "thinking.png")
    plot_stages(results, out / "stages.png")
    if results.get("value"):
        plot_value(results["value"], out / "value.png")
    md = markdown_text(results)
    write_text(out / "report.md", md)
    write_text(out / "report.html", inline_html(md, out, f"OneReason-Bench: {results['run']}"))


def compare(result_files: list[Path], out: Path) -> str:
    """Runs side by side: every method's NDCG@10 / Recall@10 per run (overall and per domain), the
    ratios, R0–R2 and perplexity; compare.md, compare.html and compare.png in `out`."""
    runs = []
    for f in result_files:
        if not f.exists():
            raise FileNotFoundError(f"compare: no bench results at {f} (run `onereason bench run` first)")
        runs.append(json.loads(f.read_text()))
    labels = [f"{x['run']}" if [y["run"] for y in runs].count(x["run"]) == 1 else str(f.parent.parent)
              for x, f in zip(runs, result_files)]
    methods = list(dict.fromkeys(n for x in runs for n in x["methods"]))
    lines = ["# OneReason-Bench: " + " vs ".join(labels), ""]
    lines += _table(["run", "split", "users", "beams", "domains"],
                    [[l, x["split"], x["users"], x["beams"], ", ".join(x["domains"])] for l, x in zip(labels, runs)])
    for name in ("ndcg@10", "recall@10"):
        lines += [f"## {name} (all users)", ""]
        lines += _table(["method", *labels], [[n, *[metric(x, n, name) for x in runs]] for n in methods])
    lines += ["## Our best method over the baselines (NDCG@10, all users)", ""]
    lines += _ratio_table("run", [(label, x["ratios"].get("all", {})) for label, x in zip(labels, runs)])
    models = list(dict.fromkeys(n for x in runs for n in x["perplexity"]))
    lines += ["## Perplexity on held-out text", ""]
    lines += _table(["model", *labels], [[n, *[x["perplexity"].get(n) for x in runs]] for n in models])
    lines += ["![NDCG@10 per run](compare.png)", ""]
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(methods) * len(runs)), 4.2))
    _grouped_bars(ax, methods, {label: [metric(x, n, "ndcg@10") for n in methods] for label, x in zip(labels, runs)})
    ax.set_ylabel("NDCG@10")
    ax.legend(fontsize=8)
    save_figure(fig, out / "compare.png", dpi=100)
    md = "\n".join(lines) + "\n"
    write_text(out / "compare.md", md)
    write_text(out / "compare.html", inline_html(md, out, "OneReason-Bench comparison"))
    return md
