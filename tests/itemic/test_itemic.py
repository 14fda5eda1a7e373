"""Residual k-means, collision resolution, SID codec round trip, trie completeness, tokenizer, embeddings."""

import numpy as np
import pandas as pd
import pytest

from onereason.itemic.embed import embed_texts
from onereason.itemic.rqkmeans import (codebook_stats, collision_rate, default_codebook_size,
                                       residual_kmeans, resolve_collisions, unique_codes)
from onereason.itemic.sid import SidCodec, SidTokens
from onereason.itemic.tokenizer import build_tokenizer


def test_residual_kmeans_and_collision_resolution():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 8)).astype(np.float32)
    emb = np.concatenate([base, base[:20]])  # 20 exact duplicates must collide
    codes, cents, res = residual_kmeans(emb, levels=2, k=16)
    assert codes.shape == (80, 2) and collision_rate(codes) >= 20 / 80
    fixed = resolve_collisions(codes, cents[-1], res[-1])
    assert fixed.shape == (80, 2) and collision_rate(fixed) == 0.0
    changed = (fixed != codes).any(axis=1)
    assert (fixed[:, 0] == codes[:, 0]).all()  # only the last level moves
    assert changed.sum() >= 20


def test_overflowing_prefix_gets_an_extra_level():
    emb = np.zeros((10, 4), dtype=np.float32)  # all identical: one prefix, more items than 4 codes
    codes, cents, res = residual_kmeans(emb + np.arange(10)[:, None] * 1e-6, levels=2, k=4)
    codes[:] = 0
    fixed = resolve_collisions(codes, cents[-1], res[-1])
    assert fixed.shape[1] == 3 and collision_rate(fixed) == 0.0


def test_a_sized_codebook_grows_until_no_item_needs_an_extra_level():
    """Like office at K = 32: one tight cluster of 60 items shares a prefix that K codes cannot number."""
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(size=(140, 8)), 5 + 0.01 * rng.normal(size=(60, 8))]).astype(np.float32)
    overflowing, _, k = unique_codes(emb, levels=2, k=8, grow=False)
    assert k == 8 and overflowing.shape[1] == 3  # what a fixed K gives
    codes, raw, k = unique_codes(emb, levels=2, k=8)
    assert codes.shape == (200, 2) and k > 8 and collision_rate(codes) == 0.0
    assert raw.shape == (200, 2) and raw.max() < k


def test_codebook_stats_hand_case():
    codes = np.array([[0, 0], [1, 0], [2, 0], [3, 1]])
    s = codebook_stats(codes, k=4)
    assert s[0]["utilization"] == 1.0 and s[0]["entropy_bits"] == pytest.approx(2.0)
    assert s[1]["utilization"] == 0.5 and s[1]["entropy_norm"] == pytest.approx(0.811278 / 2, abs=1e-5)
    assert default_codebook_size(4385, 3) == 64 and default_codebook_size(10, 3) == 8


def _codec():
    rng = np.random.default_rng(1)
    codes = rng.choice(np.arange(4 * 4 * 4), size=30, replace=False)
    df = pd.DataFrame({"item_id": [f"i{j}" for j in range(30)], "domain": ["x"] * 20 + ["y"] * 10,
                       "code_0": codes // 16, "code_1": codes // 4 % 4, "code_2": codes % 4})
    return SidCodec(df)


def test_codec_round_trip_and_trie_completeness():
    codec = _codec()
    tok = build_tokenizer(["some item text for the tokenizer"] * 5, codec.code_vocab(), codec.special_vocab(),
                          vocab_size=300)
    sid = SidTokens(codec, tok)
    for item in codec.item_ids:
        text = codec.item_text(item)
        assert codec.parse(text) == [item]
        assert tok(text)["input_ids"] == sid.ids(item)  # every item token is one token
        assert sid.decode(sid.ids(item)) == item
    # Walk the whole trie: every complete path is exactly one item, every item is reached.
    leaves, stack = [], [()]
    while stack:
        prefix = stack.pop()
        nxt = sid.allowed(prefix)
        if not nxt:
            leaves.append(prefix)
        stack.extend(prefix + (t,) for t in nxt)
    assert sorted(sid.decode(list(p)) for p in leaves) == sorted(codec.item_ids)
    assert sid.allowed((), ["y"]) == [sid.begin_id["y"]]
    unused = next(c for c in np.ndindex(4, 4, 4) if c not in codec.by_codes)
    assert codec.parse("".join(f"<s_{'abc'[l]}_{c}>" for l, c in enumerate(unused))) == [None]


def test_codec_rejects_shared_sids():
    df = pd.DataFrame({"item_id": ["a", "b"], "domain": ["x", "x"], "code_0": [1, 1], "code_1": [2, 2]})
    with pytest.raises(ValueError, match="share a SID"):
        SidCodec(df)


def test_identity_level_tells_apart_items_that_share_their_semantic_codes():
    df = pd.DataFrame({"item_id": ["a", "b", "c"], "domain": ["x"] * 3, "code_0": [1, 1, 0], "code_1": [2, 2, 3],
                       "identity": [0, 1, 2]})
    codec = SidCodec(df)
    assert codec.levels == 3 and codec.level_sizes == [4, 4, 3]
    assert codec.code_vocab()[-3:] == ["<s_c_0>", "<s_c_1>", "<s_c_2>"] and len(codec.code_vocab()) == 11
    assert codec.item_text("b") == "<|x_begin|><s_a_1><s_b_2><s_c_1><|x_end|>"
    tok = build_tokenizer(["some item text for the tokenizer"] * 5, codec.code_vocab(), codec.special_vocab(),
                          vocab_size=300)
    sid = SidTokens(codec, tok)
    assert [sid.decode(sid.ids(i)) for i in "abc"] == ["a", "b", "c"]
    prefix = tuple(sid.ids("a")[:3])
    assert sorted(sid.allowed(prefix)) == sorted([sid.ids("a")[3], sid.ids("b")[3]])  # the shared prefix branches


def write_catalog(run_dir, n: int, sequences: list[list[int]]) -> None:
    """Items i0..i{n-1} and one train sequence of item indices per user, as the data stage writes them."""
    from onereason import rundir

    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n)], "domain": "x", "title": [f"item {j}" for j in range(n)],
                          "description": [f"item {j}" for j in range(n)]})
    (run_dir / rundir.ITEMS).parent.mkdir(parents=True, exist_ok=True)
    items.to_parquet(run_dir / rundir.ITEMS)
    pd.DataFrame([{"user_id": f"u{u}", "item_id": f"i{j}", "timestamp": t, "domain": "x", "rating": np.nan,
                   "split": "train"} for u, seq in enumerate(sequences) for t, j in enumerate(seq)]
                 ).to_parquet(run_dir / rundir.INTERACTIONS)


def test_train_targets_per_item_counts_train_events_after_each_users_first():
    from onereason.itemic.build import train_targets_per_item

    inter = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "b"], "item_id": list("xyzxyz"),
                          "split": ["train", "train", "valid", "train", "train", "test"]})
    assert train_targets_per_item(inter, 4) == (4 - 2) / 4


@pytest.mark.parametrize("users, identity", [(3, False), (40, True)])
def test_the_identity_code_turns_on_where_train_has_enough_targets_per_item(tmp_path, monkeypatch, users, identity):
    """`identity: null`: 3 semantic levels on a thin train split; one level + an identity code once each item has
    `identity_min_targets` next-item targets to learn its own row from."""
    import onereason.itemic.build as build

    n = 8
    write_catalog(tmp_path, n, [list(np.random.default_rng(u).permutation(n)) for u in range(users)])
    monkeypatch.setattr(build, "embed_texts", lambda texts, *a, **k: np.random.default_rng(0).normal(
        size=(len(texts), 8)).astype(np.float32))
    config = build.ItemicConfig(codebook_size=4, vocab_size=300)
    assert config.identity is None and config.levels is None
    stats = build.run(config, tmp_path)
    assert stats["train_targets_per_item"] == users * (n - 1) / n and stats["identity"] == identity
    sid_map = pd.read_parquet(tmp_path / "itemic" / "sid_map.parquet")
    semantic = [c for c in sid_map.columns if c.startswith("code_")]
    assert ("identity" in sid_map.columns) == identity and len(semantic) == (1 if identity else 3)
    line = build.describe(stats, config)
    assert line.startswith("SIDs: 1 semantic code + an identity code" if identity else "SIDs: 3 semantic codes")
    assert ("at least" if identity else "under") in line and f"{users * (n - 1) / n:.1f} train targets" in line


def test_itemic_stage_with_identity_codes(tmp_path, monkeypatch):
    import onereason.itemic.build as build

    n = 40
    write_catalog(tmp_path, n, [[0, 1]])
    monkeypatch.setattr(build, "embed_texts", lambda texts, *a, **k: np.random.default_rng(0).normal(
        size=(len(texts), 8)).astype(np.float32))
    stats = build.run(build.ItemicConfig(levels=2, codebook_size=4, identity=True, vocab_size=300, collab_weight=0),
                      tmp_path)
    sid_map = pd.read_parquet(tmp_path / "itemic" / "sid_map.parquet")
    assert sid_map["identity"].tolist() == list(range(n)) and stats["levels"] == 3
    assert stats["collision_rate_before"] > 0 and stats["collision_rate_after"] == 0 and not stats["extra_level_added"]
    assert sid_map[["code_0", "code_1"]].max().max() < 4  # semantic codes as clustered, none reassigned


def test_itemic_stage_clusters_text_joined_with_train_cooccurrence_by_default(tmp_path, monkeypatch):
    """The default SIDs come from [text | co-occurrence]: items users take together share a first code even
    when their text says nothing (random text vectors here)."""
    import onereason.itemic.build as build
    from onereason import rundir

    n = 32
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n)], "domain": "x", "title": [f"item {j}" for j in range(n)],
                          "description": [f"item {j}" for j in range(n)]})
    (tmp_path / rundir.ITEMS).parent.mkdir(parents=True, exist_ok=True)
    items.to_parquet(tmp_path / rundir.ITEMS)
    rows = []
    for u in range(64):  # two groups of items, each user stays inside one group
        group = range(0, 16) if u % 2 else range(16, 32)
        for t, j in enumerate(np.random.default_rng(u).choice(list(group), 6, replace=False)):
            rows.append({"user_id": f"u{u}", "item_id": f"i{j}", "timestamp": t, "domain": "x", "rating": np.nan,
                         "split": "train"})
    pd.DataFrame(rows).to_parquet(tmp_path / rundir.INTERACTIONS)
    monkeypatch.setattr(build, "embed_texts", lambda texts, *a, **k: 0.1 * np.random.default_rng(0).normal(
        size=(len(texts), 8)).astype(np.float32))
    config = build.ItemicConfig(levels=2, codebook_size=2, vocab_size=300)
    assert config.collab_weight == 1.0
    build.run(config, tmp_path)
    assert np.load(tmp_path / rundir.EMBEDDINGS).shape == (n, 8 + config.collab_dim)
    first = pd.read_parquet(tmp_path / "itemic" / "sid_map.parquet")["code_0"].to_numpy()
    assert len(set(first[:16])) == 1 and len(set(first[16:])) == 1 and first[0] != first[16]


def test_itemic_stage_clusters_text_joined_with_vectors_from_a_file(tmp_path, monkeypatch):
    """`collab_vectors` replaces co-occurrence: two groups in the file's vectors become two first codes; an
    item the file lacks gets a zero row."""
    import onereason.itemic.build as build
    from onereason import rundir

    n = 32
    write_catalog(tmp_path, n, [[0, 1]])
    vectors = pd.DataFrame({"item_id": [f"i{j}" for j in range(n - 1)],
                            "vector": [np.array([1.0, 0.0, 0.1 * j]) if j < 16 else np.array([0.0, 1.0, 0.1 * j])
                                       for j in range(n - 1)]})
    vectors.to_parquet(tmp_path / "vec.parquet")
    monkeypatch.setattr(build, "embed_texts", lambda texts, *a, **k: 0.1 * np.random.default_rng(0).normal(
        size=(len(texts), 8)).astype(np.float32))
    build.run(build.ItemicConfig(levels=2, codebook_size=2, vocab_size=300, collab_vectors=tmp_path / "vec.parquet"),
              tmp_path)
    emb = np.load(tmp_path / rundir.EMBEDDINGS)
    assert emb.shape == (n, 8 + 3) and not emb[-1, 8:].any()
    assert np.allclose(np.linalg.norm(emb[:-1, 8:], axis=1), 1.0, atol=1e-5)
    first = pd.read_parquet(tmp_path / "itemic" / "sid_map.parquet")["code_0"].to_numpy()
    assert len(set(first[:16])) == 1 and len(set(first[16:31])) == 1 and first[0] != first[16]


def test_item_vectors_file_errors_name_the_file_and_the_problem(tmp_path):
    from onereason.itemic.item_vectors import read_item_vectors

    with pytest.raises(FileNotFoundError, match="itemic.collab_vectors"):
        read_item_vectors(tmp_path / "none.parquet", ["a"])
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"item_id": ["a"], "vec": [[1.0]]}).to_parquet(bad)
    with pytest.raises(ValueError, match=r"bad.parquet: missing column\(s\) \['vector'\]"):
        read_item_vectors(bad, ["a"])
    pd.DataFrame({"item_id": ["a", "b"], "vector": [[1.0, 2.0], [1.0]]}).to_parquet(bad)
    with pytest.raises(ValueError, match="row 1 \\(item b\\) has 1 dimensions"):
        read_item_vectors(bad, ["a", "b"])
    pd.DataFrame({"item_id": ["z"], "vector": [[1.0]]}).to_parquet(bad)
    with pytest.raises(ValueError, match="none of its 1 items"):
        read_item_vectors(bad, ["a"])


def test_real_minilm_embeddings_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEREASON_CACHE", str(tmp_path))
    texts = ["stainless steel hex bolts", "zinc plated hex bolts and nuts", "romantic comedy film"]
    emb = embed_texts(texts, show_progress=False)
    assert emb.shape == (3, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    assert np.array_equal(embed_texts(texts, show_progress=False), emb)
    # a cut to 3 word pieces is its own cache entry and equals embedding the cut text
    cut = embed_texts(texts, show_progress=False, max_tokens=3)
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2 and not np.allclose(cut[1], emb[1])
    assert np.allclose(cut[0], embed_texts(["stainless"], show_progress=False)[0], atol=1e-5)  # [CLS] stainless [SEP]


def test_cooccurrence_vectors_use_train_only():
    from onereason.itemic.cooccurrence import cooccurrence_embeddings

    rows = []
    for u in range(30):  # items a,b always together, c,d always together; e,f only in valid/test
        pair = "ab" if u % 2 else "cd"
        rows += [(f"u{u}", pair[0], 0, "train"), (f"u{u}", pair[1], 1, "train"),
                 (f"u{u}", "e", 2, "valid"), (f"u{u}", "f", 3, "test")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"]).assign(rating=float("nan"))
    emb = cooccurrence_embeddings(inter, list("abcdef"), dim=4)
    assert np.allclose(emb[4:], 0.0)  # never seen in train: no signal leaks from valid/test
    assert emb[0] @ emb[1] > 0.9 and abs(emb[0] @ emb[2]) < 0.1
