"""Readers for the raw layouts the shipped datasets use, plus a generic column-mapped reader.

Every reader returns a `Dataset` in the unified schema; every malformed input raises a
`DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from onereason.data.schema import DataError, Dataset, check_dataset
from onereason.data.split import leave_one_out


def read_table(path: Path, required: list[str], sep: str = "\t") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) from a delimited text file with a header line.

    RecBole headers carry types (`user_id:token`); only the part before ':' names the field.
    """
    if not path.exists():
        raise DataError(path, "file not found")
    with open(path, encoding="utf-8") as f:
        header_line = f.readline().rstrip("\n")
        header = [h.split(":")[0] for h in header_line.split(sep)]
        for col in required:
            if col not in header:
                raise DataError(path, f"missing column (header is {header})", line=1, field=col)
        for lineno, raw in enumerate(f, start=2):
            raw = raw.rstrip("\n")
            if not raw.strip():
                continue
            values = raw.split(sep)
            if len(values) != len(header):
                raise DataError(path, f"expected {len(header)} fields, found {len(values)}", line=lineno)
            yield lineno, dict(zip(header, values))


def _int(path: Path, lineno: int, field: str, value: str) -> int:
    try:
        return int(float(value)) if "." in value else int(value)
    except ValueError:
        raise DataError(path, f"not an integer: {value!r}", line=lineno, field=field) from None


def _read_index(path: Path) -> dict[str, str]:
    """`raw_id<TAB>index` files → {index: raw_id}; duplicates are errors."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            parts = raw.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise DataError(path, "expected 'raw_id<TAB>index'", line=lineno)
            raw_id, idx = parts
            if idx in out:
                raise DataError(path, f"duplicate index {idx}", line=lineno, field="index")
            out[idx] = raw_id
    return out


def _split_amazon_text(text: str) -> tuple[str, list[str], str]:
    """UniSRec writes 'title. categories. brand. '; titles may contain periods, so split from the right."""
    parts = text.strip().rstrip(".").rsplit(". ", 2)
    if len(parts) == 3:
        title, cats, brand = parts
        return title.strip(), [cats.strip()] if cats.strip() else [], brand.strip()
    return text.strip(), [], ""


def _read_text_file(path: Path, id_col: str, text_col: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for lineno, row in read_table(path, [id_col, text_col]):
        key = row[id_col]
        if key in texts:
            raise DataError(path, f"duplicate item id {key!r}", line=lineno, field=id_col)
        texts[key] = row[text_col]
    return texts


def _train_prefix(path: Path) -> dict[str, list[str]]:
    """Rebuild each user's training sequence from RecBole's prefix-augmented train rows.

    Rows of one user come latest first, each `history -> target` with the history cut to the
    last 50 items, so the sequence is the first history item followed by the targets in
    reverse file order; every row is checked against that reconstruction.
    """
    rows: dict[str, list[tuple[int, list[str], str]]] = {}
    for lineno, row in read_table(path, ["user_id", "item_id_list", "item_id"]):
        rows.setdefault(row["user_id"], []).append((lineno, row["item_id_list"].split(), row["item_id"]))
    out = {}
    for uid, urows in rows.items():
        urows.reverse()
        if not urows[0][1]:
            raise DataError(path, "empty history", line=urows[0][0], field="item_id_list")
        seq = [urows[0][1][0]] + [t for _, _, t in urows]
        for pos, (lineno, hist, _) in enumerate(urows, start=1):
            if hist != seq[max(0, pos - len(hist)):pos]:
                raise DataError(path, f"user {uid}: row is not a prefix of the user's sequence",
                                line=lineno, field="item_id_list")
        out[uid] = seq
    return out


def load_recbole_sequences(root: Path, prefix: str, domain: str, name: str) -> Dataset:
    """RecBole sequential atomic files (UniSRec processing: amazon-scientific, games-6k).

    The published leave-one-out split is kept: test target last, valid target second to last.
    Histories in valid/test rows are cut to 50 items, so the whole sequence comes from the
    train rows when the train file is there (scientific), else from the valid row (games-6k,
    whose README defines train as everything before the last two items).
    Files with an `.item` catalog (games) or a `.text` + `.item2index` pair (scientific) both work.
    """
    test_path, valid_path = root / f"{prefix}.test.inter", root / f"{prefix}.valid.inter"
    train_path = root / f"{prefix}.train.inter"
    train = _train_prefix(train_path) if train_path.exists() else {}
    valid_rows: dict[str, tuple[int, list[str], str]] = {}
    for lineno, row in read_table(valid_path, ["user_id", "item_id_list", "item_id"]):
        valid_rows[row["user_id"]] = (lineno, row["item_id_list"].split(), row["item_id"])
    records = []
    for lineno, row in read_table(test_path, ["user_id", "item_id_list", "item_id"]):
        uid, thist, ttarget = row["user_id"], row["item_id_list"].split(), row["item_id"]
        if not thist:
            raise DataError(test_path, "empty history", line=lineno, field="item_id_list")
        if uid not in valid_rows:
            raise DataError(test_path, f"user {uid} has a test row but no valid row", line=lineno, field="user_id")
        vline, vhist, vtarget = valid_rows.pop(uid)
        seq = train.pop(uid, vhist) + [vtarget, ttarget]
        if vhist != seq[:-2][-len(vhist):]:
            raise DataError(valid_path, f"user {uid}: history disagrees with the train rows",
                            line=vline, field="item_id_list")
        if thist != seq[:-1][-len(thist):]:
            raise DataError(test_path, f"user {uid}: history disagrees with the valid row",
                            line=lineno, field="item_id_list")
        n = len(seq)
        for pos, item in enumerate(seq):
            split = "test" if pos == n - 1 else "valid" if pos == n - 2 else "train"
            records.append((uid, item, pos, split))
    if valid_rows:
        uid, (vline, _, _) = next(iter(valid_rows.items()))
        raise DataError(valid_path, f"user {uid} has a valid row but no test row", line=vline, field="user_id")
    if train:
        raise DataError(train_path, f"user {next(iter(train))} has train rows but no test row", field="user_id")
    inter = pd.DataFrame(records, columns=["user_id", "item_id", "timestamp", "split"])

    item_file = root / f"{prefix}.item"
    if item_file.exists():  # games-6k: index → title
        titles = _read_text_file(item_file, "item_id", "title")
        items = pd.DataFrame({"item_id": list(titles), "title": list(titles.values())})
        items["description"], items["categories"], items["brand"] = items["title"], [[]] * len(items), ""
    else:  # scientific: ASIN → text, index file maps ASIN → index
        texts = _read_text_file(root / f"{prefix}.text", "item_id", "text")
        index = _read_index(root / f"{prefix}.item2index")
        missing = [a for a in index.values() if a not in texts]
        if missing:
            raise DataError(root / f"{prefix}.text", f"no text for item {missing[0]!r}", field="item_id")
        users = root / f"{prefix}.user2index"
        if users.exists():
            umap = _read_index(users)
            inter["user_id"] = inter["user_id"].map(lambda u: umap.get(u, u))
        unknown = ~inter["item_id"].isin(index.keys())
        if unknown.any():
            raise DataError(test_path, f"item index {inter['item_id'][unknown].iloc[0]!r} is not in "
                            f"{prefix}.item2index", field="item_id")
        inter["item_id"] = inter["item_id"].map(index)
        rows = []
        for idx, asin in index.items():
            title, cats, brand = _split_amazon_text(texts[asin])
            rows.append((asin, title, texts[asin].strip(), cats, brand))
        items = pd.DataFrame(rows, columns=["item_id", "title", "description", "categories", "brand"])
    return _finish(inter, items, None, domain, name, test_path)


def load_recbole_atomic(root: Path, prefix: str, domain: str, name: str) -> Dataset:
    """RecBole general atomic files with timestamps (ml-100k): `.inter`, `.item`, `.user`.

    No published split: temporal leave-one-out per user.
    """
    inter_path, item_path = root / f"{prefix}.inter", root / f"{prefix}.item"
    records = []
    for lineno, row in read_table(inter_path, ["user_id", "item_id", "timestamp"]):
        rating = row.get("rating")
        try:
            r = float(rating) if rating not in (None, "") else np.nan
        except ValueError:
            raise DataError(inter_path, f"not a number: {rating!r}", line=lineno, field="rating") from None
        records.append((row["user_id"], row["item_id"], _int(inter_path, lineno, "timestamp", row["timestamp"]), r))
    inter = pd.DataFrame(records, columns=["user_id", "item_id", "timestamp", "rating"])
    rows, seen = [], set()
    for lineno, row in read_table(item_path, ["item_id", "movie_title"]):
        if row["item_id"] in seen:
            raise DataError(item_path, f"duplicate item id {row['item_id']!r}", line=lineno, field="item_id")
        seen.add(row["item_id"])
        genres = row.get("class", "").split()
        year = row.get("release_year", "")
        title = f"{row['movie_title']} ({year})" if year else row["movie_title"]
        desc = f"{title}. Genres: {', '.join(genres)}." if genres else title
        rows.append((row["item_id"], title, desc, genres, ""))
    items = pd.DataFrame(rows, columns=["item_id", "title", "description", "categories", "brand"])
    user_path = root / f"{prefix}.user"
    users = None
    if user_path.exists():
        users = pd.DataFrame([r for _, r in read_table(user_path, ["user_id"])])
    _check_known_items(inter, items, inter_path)
    inter["split"] = leave_one_out(inter)
    return _finish(inter, items, users, domain, name, inter_path)


def load_lrd(root: Path, domain: str, name: str, text_file: str = "Office.text",
             index_file: str = "Office.item2index") -> Dataset:
    """The ReChorus / LRD layout (amazon-office-2014): train/dev/test.csv with Unix times,
    item_meta.csv with category, brand and real complement / substitute lists.

    dev/test rows carry 99 sampled negatives; full-ranking evaluation ignores them.
    """
    index = _read_index(root / index_file)  # index → ASIN
    texts = _read_text_file(root / text_file, "id", "text")
    frames = []
    for fname, split in (("train.csv", "train"), ("dev.csv", "valid"), ("test.csv", "test")):
        path = root / fname
        recs = []
        for lineno, row in read_table(path, ["user_id", "item_id", "time"]):
            item = index.get(row["item_id"])
            if item is None:
                raise DataError(path, f"item {row['item_id']!r} is not in {index_file}", line=lineno, field="item_id")
            recs.append((row["user_id"], item, _int(path, lineno, "time", row["time"]), split))
        frames.append(pd.DataFrame(recs, columns=["user_id", "item_id", "timestamp", "split"]))
    inter = pd.concat(frames, ignore_index=True)
    # Order within a user: by time, and the published split order breaks ties (train < valid < test).
    inter["_o"] = inter["split"].map({"train": 0, "valid": 1, "test": 2})
    inter = inter.sort_values(["user_id", "timestamp", "_o"], kind="stable").drop(columns="_o")

    meta_path = root / "item_meta.csv"
    meta: dict[str, dict] = {}
    for lineno, row in read_table(meta_path, ["item_id", "i_category", "i_brand", "r_complement", "r_substitute"]):
        asin = index.get(row["item_id"])
        if asin is None:
            raise DataError(meta_path, f"item {row['item_id']!r} is not in {index_file}", line=lineno, field="item_id")
        rel = {}
        for field in ("r_complement", "r_substitute"):
            try:
                ids = ast.literal_eval(row[field])
            except (ValueError, SyntaxError):
                raise DataError(meta_path, f"not a list: {row[field][:40]!r}", line=lineno, field=field) from None
            rel[field] = [index[str(i)] for i in ids if str(i) in index]
        meta[asin] = {"category": f"office category {row['i_category']}",
                      "brand": f"office brand {row['i_brand']}", **rel}
    rows = []
    for asin, text in texts.items():
        m = meta.get(asin, {})
        rows.append((asin, text.strip(), text.strip(), [m["category"]] if m else [], m.get("brand", ""),
                     m.get("r_complement", []), m.get("r_substitute", [])))
    items = pd.DataFrame(rows, columns=["item_id", "title", "description", "categories", "brand",
                                        "complements", "substitutes"])
    _check_known_items(inter, items, root / "train.csv")
    return _finish(inter, items, None, domain, name, root)


def _read_any(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(path, "file not found")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.strip():
                    try:
                        rows.append(json.loads(raw))
                    except json.JSONDecodeError as e:
                        raise DataError(path, f"malformed JSON: {e.msg}", line=lineno) from None
        return pd.DataFrame(rows)
    sep = "\t" if suffix in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(path, f"malformed row: {e}") from None


def load_generic(interactions: Path, items: Path, domain: str, name: str,
                 columns: dict[str, str] | None = None, drop_unknown_items: bool = False) -> Dataset:
    """CSV / TSV / Parquet / JSONL interactions + items with a column mapping.

    `columns` maps schema names to the file's names, e.g. {"user_id": "userId",
    "item_id": "movieId", "title": "title", "categories": "genres"}. Categories given as
    one string are split on '|'. Split: temporal leave-one-out.
    """
    columns = columns or {}
    col = lambda k: columns.get(k, k)  # noqa: E731
    inter_raw, items_raw = _read_any(interactions), _read_any(items)
    header_lines = 0 if interactions.suffix.lower() in (".parquet", ".jsonl", ".json") else 1
    for key in ("user_id", "item_id", "timestamp"):
        if col(key) not in inter_raw.columns:
            raise DataError(interactions, f"missing column (have {list(inter_raw.columns)})", field=col(key))
    for key in ("item_id", "title"):
        if col(key) not in items_raw.columns:
            raise DataError(items, f"missing column (have {list(items_raw.columns)})", field=col(key))
    inter = pd.DataFrame({k: inter_raw[col(k)].astype(str) for k in ("user_id", "item_id")})
    ts = pd.to_numeric(inter_raw[col("timestamp")], errors="coerce")
    if ts.isna().any():
        i = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise DataError(interactions, f"not a number: {inter_raw[col('timestamp')].iloc[i]!r}",
                        line=i + 1 + header_lines, field=col("timestamp"))
    inter["timestamp"] = ts.astype("int64")
    inter["rating"] = (pd.to_numeric(inter_raw[col("rating")], errors="coerce")
                       if col("rating") in inter_raw.columns else np.nan)
    for key in ("user_id", "item_id"):
        empty = inter[key].str.strip().eq("") | inter[key].eq("nan")
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(interactions, "empty value", line=i + 1 + header_lines, field=col(key))
    it = pd.DataFrame({"item_id": items_raw[col("item_id")].astype(str), "title": items_raw[col("title")].astype(str)})
    items_header = 0 if items.suffix.lower() in (".parquet", ".jsonl", ".json") else 1
    dup = it["item_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(items, f"duplicate item id {it['item_id'].iloc[i]!r}", line=i + 1 + items_header,
                        field=col("item_id"))
    it["description"] = items_raw[col("description")].astype(str) if col("description") in items_raw else it["title"]
    if col("categories") in items_raw.columns:
        it["categories"] = [c if isinstance(c, list) else [x for x in str(c).split("|") if x]
                            for c in items_raw[col("categories")]]
    else:
        it["categories"] = [[] for _ in range(len(it))]
    it["brand"] = items_raw[col("brand")].astype(str) if col("brand") in items_raw.columns else ""
    if col("price") in items_raw.columns:  # optional: a price or bid per item (empty: none)
        it["price"] = _prices(items_raw[col("price")], items, items_header, col("price"))
    inter = _check_known_items(inter, it, interactions, drop=drop_unknown_items, header_lines=header_lines)
    inter["split"] = leave_one_out(inter)
    return _finish(inter, it, None, domain, name, interactions)


def _prices(raw: pd.Series, path: Path, header_lines: int, field: str) -> np.ndarray:
    """Numbers ≥ 0, or missing (an empty cell, null); anything else is an error naming its line."""
    text = raw.astype(str).str.strip()
    missing = raw.isna().to_numpy() | text.isin(["", "nan", "None"]).to_numpy()
    value = pd.to_numeric(raw.where(~missing), errors="coerce").to_numpy(dtype=float)
    bad = ~missing & ~(np.isfinite(value) & (value >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(path, f"not a price (a number ≥ 0, or empty): {raw.iloc[i]!r}", line=i + 1 + header_lines,
                        field=field)
    return value


def _check_known_items(inter: pd.DataFrame, items: pd.DataFrame, path: Path, drop: bool = False,
                       header_lines: int = 1) -> pd.DataFrame:
    """Unknown items are an error; with drop=True they are dropped with a counted warning."""
    unknown = ~inter["item_id"].isin(set(items["item_id"]))
    if not unknown.any():
        return inter
    if drop:
        import warnings
        warnings.warn(f"{path}: dropped {int(unknown.sum())} interactions whose item has no catalog entry",
                      stacklevel=2)
        return inter[~unknown].reset_index(drop=True)
    i = int(np.flatnonzero(unknown.to_numpy())[0])
    raise DataError(path, f"item {inter['item_id'].iloc[i]!r} has no catalog entry "
                    f"({int(unknown.sum())} such interactions)", line=i + 1 + header_lines, field="item_id")


def _finish(inter: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None, domain: str,
            name: str, source: Path) -> Dataset:
    inter = inter.copy()
    inter["domain"] = domain
    if "rating" not in inter.columns:
        inter["rating"] = np.nan
    inter["timestamp"] = inter["timestamp"].astype("int64")
    inter["rating"] = inter["rating"].astype("float64")
    items = items.copy()
    items["domain"] = domain
    inter = inter[["user_id", "item_id", "timestamp", "domain", "rating", "split"]].reset_index(drop=True)
    ds = Dataset(name=name, interactions=inter, items=items.reset_index(drop=True), users=users)
    check_dataset(ds, source)
    return ds
