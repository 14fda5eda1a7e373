"""The Item layer: item tokens aligned with their text in both directions.

Templates: SID → title, title → SID, SID → category, SID → brand, SID → description, and
"items in category X include ...". Items in `heldout` keep only the category and brand
statements, so R0 perception (SID ↔ title) can be measured on items whose title was never
paired with their tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onereason.itemic.sid import SidCodec


def sid_to_title(sid_text: str) -> str:
    """The prompt of the SID → title statement; the model continues with the title. No other
    template starts this way, so the continuation can only be a title."""
    return f"The title of {sid_text} is"


def title_to_sid(title: str) -> str:
    """The prompt of the title → SID statement; the item's begin token follows."""
    return f"The item {title} has the tokens "


def item_documents(items: pd.DataFrame, codec: SidCodec, heldout: set[str], per_category: int = 5,
                   seed: int = 0) -> list[tuple[str, str]]:
    """(domain, text) documents."""
    rng = np.random.default_rng(seed)
    docs: list[tuple[str, str]] = []
    by_category: dict[tuple[str, str], list[str]] = {}
    for item, dom, title, desc, cats, brand in zip(items["item_id"], items["domain"], items["title"],
                                                   items["description"], items["categories"], items["brand"]):
        s = codec.item_text(item)
        if item not in heldout:
            docs.append((dom, f"{sid_to_title(s)} {title}."))
            docs.append((dom, f"{title_to_sid(title)}{s}."))
            if desc and desc != title:
                docs.append((dom, f"The description of {s} reads: {desc}"))
        cats = [c for c in cats if c]
        if cats:
            docs.append((dom, f"The category of {s} is {' / '.join(cats)}."))
        if brand:
            docs.append((dom, f"The brand of {s} is {brand}."))
        for c in cats:
            by_category.setdefault((dom, c), []).append(s)
    for (dom, cat), sids in by_category.items():
        order = rng.permutation(len(sids))
        for start in range(0, len(sids), per_category):
            group = ", ".join(sids[i] for i in order[start:start + per_category])
            docs.append((dom, f"Items in the category {cat} include {group}."))
    return docs
