"""Loaders on every shipped dataset (counts from the data README) and on malformed input."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import DATASETS
from onereason.data import DataError, load_datasets
from onereason.data.loaders import load_generic, load_lrd, load_recbole_atomic, load_recbole_sequences
from onereason.data.registry import load_dataset
from onereason.data.split import leave_one_out
from onereason.data.stats import dataset_stats
from onereason.pipeline import DataConfig, GenericSource, run_data


@pytest.mark.parametrize("name,users,items,inters", [
    ("amazon-scientific", 8442, 4385, 59427),
    ("amazon-office-2014", 4905, 2420, 53258),
    ("ml-100k", 943, 1682, 100000),
])
def test_shipped_counts(name, users, items, inters):
    ds = load_dataset(name)
    assert ds.interactions["user_id"].nunique() == users
    assert len(ds.items) == items
    assert len(ds.interactions) == inters
    per_user = ds.interactions.groupby("user_id")["split"].value_counts().unstack(fill_value=0)
    assert (per_user["test"] == 1).all() and (per_user["valid"] == 1).all()


def test_scientific_keeps_the_published_split():
    ds = load_dataset("amazon-scientific")
    index = dict(line.split("\t") for line in (DATASETS / "amazon-scientific" / "Scientific.item2index")
                 .read_text().splitlines())
    inv = {v: k for k, v in index.items()}
    first = (DATASETS / "amazon-scientific" / "Scientific.test.inter").read_text().splitlines()[1].split("\t")
    user_hist = ds.interactions[ds.interactions["user_id"] == "ABW8NXS7SV55K"].sort_values("timestamp")
    assert user_hist[user_hist["split"] == "test"]["item_id"].item() == inv[first[2]]
    assert user_hist["item_id"].tolist()[:-1][-len(first[1].split()):] == [inv[i] for i in first[1].split()]


def test_ml100k_split_is_temporal():
    inter = load_dataset("ml-100k").interactions
    last_train = inter[inter["split"] == "train"].groupby("user_id")["timestamp"].max()
    test = inter[inter["split"] == "test"].set_index("user_id")["timestamp"]
    assert (test >= last_train.reindex(test.index)).all()


def test_office_relations_are_real_items():
    items = load_dataset("amazon-office-2014").items
    known = set(items["item_id"])
    comps = [c for cs in items["complements"] for c in cs]
    assert len(comps) > 1000 and all(c in known for c in comps)


def test_multi_domain_corpus():
    ds = load_datasets(["amazon-scientific", "amazon-office-2014", "ml-100k"])
    assert ds.domains() == ["movies", "office", "scientific"]
    assert ds.items["item_id"].is_unique
    assert ds.interactions["user_id"].str.split("/").str[0].eq(ds.interactions["domain"]).all()
    stats = dataset_stats(ds).set_index("domain")
    assert stats.loc["all", "interactions"] == 59427 + 53258 + 100000


def test_leave_one_out_small_case():
    inter = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 2, "item_id": list("wxyzpq"),
                          "timestamp": [3, 1, 2, 2, 5, 6]})
    assert leave_one_out(inter).tolist() == ["test", "train", "train", "valid", "train", "train"]


def _copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(DATASETS / name, dst)
    return dst


def _edit_line(path, lineno, fn):
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("".join(lines))


def test_malformed_row_names_file_and_line(tmp_path):
    root = _copy(tmp_path, "amazon-scientific")
    _edit_line(root / "Scientific.test.inter", 5, lambda l: l.replace("\t", " ", 1))
    with pytest.raises(DataError, match=r"Scientific.test.inter, line 5: expected 3 fields"):
        load_recbole_sequences(root, "Scientific", "scientific", "x")


def test_missing_column_names_the_field(tmp_path):
    root = _copy(tmp_path, "ml-100k")
    _edit_line(root / "ml-100k.inter", 1, lambda l: l.replace("timestamp:float", "time:float"))
    with pytest.raises(DataError, match=r"ml-100k.inter, line 1, field 'timestamp': missing column"):
        load_recbole_atomic(root, "ml-100k", "movies", "x")


def test_non_integer_timestamp(tmp_path):
    root = _copy(tmp_path, "ml-100k")
    _edit_line(root / "ml-100k.inter", 7, lambda l: "\t".join(l.split("\t")[:3] + ["yesterday\n"]))
    with pytest.raises(DataError, match=r"line 7, field 'timestamp': not an integer"):
        load_recbole_atomic(root, "ml-100k", "movies", "x")


def test_duplicate_item_id(tmp_path):
    root = _copy(tmp_path, "ml-100k")
    _edit_line(root / "ml-100k.item", 3, lambda l: "1\t" + l.split("\t", 1)[1])
    with pytest.raises(DataError, match=r"ml-100k.item, line 3, field 'item_id': duplicate item id '1'"):
        load_recbole_atomic(root, "ml-100k", "movies", "x")


def test_unknown_item_in_lrd(tmp_path):
    root = _copy(tmp_path, "amazon-office-2014")
    _edit_line(root / "train.csv", 4, lambda l: "\t".join([l.split("\t")[0], "99999", l.split("\t")[2]]))
    with pytest.raises(DataError, match=r"train.csv, line 4, field 'item_id': item '99999'"):
        load_lrd(root, "office", "x")


def test_inconsistent_published_split(tmp_path):
    root = _copy(tmp_path, "amazon-scientific")
    _edit_line(root / "Scientific.valid.inter", 2, lambda l: l.replace("\t0 1 2", "\t0 2 1", 1))
    with pytest.raises(DataError, match=r"Scientific.valid.inter, line 2.*disagrees"):
        load_recbole_sequences(root, "Scientific", "scientific", "x")


def _generic_files(tmp_path, inter_rows, item_rows):
    (tmp_path / "i.csv").write_text("uid,iid,ts\n" + "".join(f"{r}\n" for r in inter_rows))
    (tmp_path / "m.csv").write_text("iid,name\n" + "".join(f"{r}\n" for r in item_rows))
    return tmp_path / "i.csv", tmp_path / "m.csv"


COLS = {"user_id": "uid", "item_id": "iid", "timestamp": "ts", "title": "name"}


def test_generic_loader(tmp_path):
    i, m = _generic_files(tmp_path, ["u1,a,1", "u1,b,2", "u1,c,3", "u2,a,5"], ["a,Alpha", "b,Beta", "c,Gamma"])
    ds = load_generic(i, m, "shop", "shop", COLS)
    assert ds.interactions["split"].tolist() == ["train", "valid", "test", "train"]
    assert ds.items["title"].tolist() == ["Alpha", "Beta", "Gamma"]


def test_generic_unknown_item_error_and_counted_drop(tmp_path):
    i, m = _generic_files(tmp_path, ["u1,a,1", "u1,zz,2", "u1,b,3"], ["a,Alpha", "b,Beta"])
    with pytest.raises(DataError, match=r"i.csv, line 3, field 'item_id': item 'zz' has no catalog entry"):
        load_generic(i, m, "shop", "shop", COLS)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = load_generic(i, m, "shop", "shop", COLS, drop_unknown_items=True)
    assert len(ds.interactions) == 2 and "dropped 1 interactions" in str(w[0].message)


def test_generic_missing_column_and_bad_value(tmp_path):
    i, m = _generic_files(tmp_path, ["u1,a,1", "u1,b,noon"], ["a,Alpha", "b,Beta"])
    with pytest.raises(DataError, match=r"i.csv, line 3, field 'ts': not a number"):
        load_generic(i, m, "shop", "shop", COLS)
    with pytest.raises(DataError, match=r"field 'when': missing column"):
        load_generic(i, m, "shop", "shop", {**COLS, "timestamp": "when"})


def test_bad_input_leaves_written_data_intact(tmp_path):
    i, m = _generic_files(tmp_path, ["u1,a,1", "u1,b,2", "u1,a,3"], ["a,Alpha", "b,Beta"])
    good = GenericSource(interactions=i, items=m, domain="shop", columns=COLS)
    run_data(DataConfig(datasets=[], generic=[good]), tmp_path / "run")
    before = (tmp_path / "run" / "data" / "interactions.parquet").read_bytes()
    j, n = _generic_files(tmp_path / "run", ["u1,a,1", "u1,zz,2"], ["a,Alpha"])
    bad = GenericSource(interactions=j, items=n, domain="shop", columns=COLS)
    with pytest.raises(DataError):
        run_data(DataConfig(datasets=[], generic=[bad]), tmp_path / "run")
    assert (tmp_path / "run" / "data" / "interactions.parquet").read_bytes() == before
    assert not list((tmp_path / "run" / "data").glob("*.tmp"))


def test_generic_price_column_loads_and_a_malformed_price_names_file_line_and_field(tmp_path):
    (tmp_path / "i.csv").write_text("uid,iid,ts\nu1,a,1\nu1,b,2\nu1,c,3\n")
    (tmp_path / "m.csv").write_text("iid,name,cost\na,Alpha,12.5\nb,Beta,\nc,Gamma,0\n")
    cols = {**COLS, "price": "cost"}
    ds = load_generic(tmp_path / "i.csv", tmp_path / "m.csv", "shop", "shop", cols)
    assert ds.items["price"].tolist()[::2] == [12.5, 0.0] and np.isnan(ds.items["price"].iloc[1])  # empty: none
    assert "price" not in load_generic(tmp_path / "i.csv", tmp_path / "m.csv", "shop", "shop", COLS).items
    for bad in ("twelve", "-3"):
        (tmp_path / "m.csv").write_text(f"iid,name,cost\na,Alpha,12.5\nb,Beta,{bad}\nc,Gamma,0\n")
        with pytest.raises(DataError, match=rf"m.csv, line 3, field 'cost': not a price .*{bad}"):
            load_generic(tmp_path / "i.csv", tmp_path / "m.csv", "shop", "shop", cols)
