"""The SID codec (item ↔ codes ↔ text ↔ token ids) and the prefix trie of valid SIDs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

SID_BEGIN, SID_END = "<|sid_begin|>", "<|sid_end|>"
_CODE_RE = re.compile(r"<s_([a-z])_(\d+)>")


def code_token(level: int, code: int) -> str:
    return f"<s_{chr(ord('a') + level)}_{code}>"


def domain_tokens(domain: str) -> tuple[str, str]:
    return f"<|{domain}_begin|>", f"<|{domain}_end|>"


class SidCodec:
    """Maps items to SIDs and back. Built from sid_map.parquet (item_id, domain, code_0..code_{L-1}, and
    optionally `identity`: a last code of the item's own, one token per item behind the semantic prefix)."""

    def __init__(self, sid_map: pd.DataFrame):
        code_cols = sorted((c for c in sid_map.columns if c.startswith("code_")), key=lambda c: int(c[5:]))
        self.sid_map = sid_map.reset_index(drop=True)
        self.item_ids: list[str] = self.sid_map["item_id"].tolist()
        self.domains: list[str] = sorted(self.sid_map["domain"].unique())
        semantic = self.sid_map[code_cols].to_numpy(np.int64)
        self.codebook_size = int(semantic.max()) + 1
        self.level_sizes = [self.codebook_size] * semantic.shape[1]  # codes per level, identity's = items
        self.codes = semantic
        if "identity" in self.sid_map:
            self.codes = np.column_stack([semantic, self.sid_map["identity"].to_numpy(np.int64)])
            self.level_sizes.append(int(self.codes[:, -1].max()) + 1)
        self.levels = self.codes.shape[1]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.item_domain = dict(zip(self.item_ids, self.sid_map["domain"]))
        self.by_codes = {tuple(c): item for item, c in zip(self.item_ids, self.codes.tolist())}
        if len(self.by_codes) != len(self.item_ids):
            raise ValueError("two items share a SID: sid_map is not collision-free")

    @classmethod
    def load(cls, path: Path) -> "SidCodec":
        return cls(pd.read_parquet(path))

    def code_vocab(self) -> list[str]:
        """Every code token of every level, in a fixed order."""
        return [code_token(l, c) for l, size in enumerate(self.level_sizes) for c in range(size)]

    def special_vocab(self) -> list[str]:
        return [SID_BEGIN, SID_END] + [t for d in self.domains for t in domain_tokens(d)]

    def item_text(self, item_id: str) -> str:
        """`<|office_begin|><s_a_12><s_b_7><s_c_3><|office_end|>`"""
        begin, end = domain_tokens(self.item_domain[item_id])
        codes = self.codes[self.index[item_id]]
        return begin + "".join(code_token(l, int(c)) for l, c in enumerate(codes)) + end

    def parse(self, text: str) -> list[str | None]:
        """Item ids of every SID in a text, in order; None for a well-formed but unknown SID."""
        out: list[str | None] = []
        for m in re.finditer(r"((?:<s_[a-z]_\d+>)+)", text):
            codes = tuple(int(c) for _, c in _CODE_RE.findall(m.group(1)))
            out.append(self.by_codes.get(codes))
        return out


def build_trie(rows: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """Every prefix of the token rows → the token ids allowed next (sorted)."""
    children: dict[tuple[int, ...], set[int]] = {}
    for row in rows:
        for j in range(len(row)):
            children.setdefault(tuple(row[:j]), set()).add(row[j])
    return {k: sorted(v) for k, v in children.items()}


class SidTokens:
    """The codec bound to a tokenizer: item ↔ token-id sequences, and the trie over token ids.

    An item is `begin, c_0, .., c_{L-1}, end` in token ids. The trie maps every valid prefix
    (starting at a domain's begin token) to the token ids allowed next.
    """

    def __init__(self, codec: SidCodec, tokenizer):
        self.codec = codec
        vocab = tokenizer.get_vocab()
        missing = [t for t in codec.code_vocab() + codec.special_vocab() if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks {len(missing)} item tokens, e.g. {missing[0]!r}")
        self.code_ids = [np.array([vocab[code_token(l, c)] for c in range(size)])
                         for l, size in enumerate(codec.level_sizes)]  # per level [K_l]
        self.begin_id = {d: vocab[domain_tokens(d)[0]] for d in codec.domains}
        self.end_id = {d: vocab[domain_tokens(d)[1]] for d in codec.domains}
        self.item_tokens = np.array(
            [[self.begin_id[codec.item_domain[item]]]
             + [self.code_ids[l][c] for l, c in enumerate(codec.codes[i])]
             + [self.end_id[codec.item_domain[item]]] for i, item in enumerate(codec.item_ids)])  # [N, L+2]
        self.by_tokens = {tuple(row): codec.item_ids[i] for i, row in enumerate(self.item_tokens.tolist())}
        self.trie = build_trie(self.item_tokens.tolist())

    @property
    def length(self) -> int:
        """Tokens per item: begin + L codes + end."""
        return self.item_tokens.shape[1]

    def ids(self, item_id: str) -> list[int]:
        return self.item_tokens[self.codec.index[item_id]].tolist()

    def decode(self, token_ids: list[int]) -> str | None:
        """The item an exact token sequence names, else None (an invalid SID)."""
        return self.by_tokens.get(tuple(token_ids))

    def allowed(self, prefix: tuple[int, ...], domains: list[str] | None = None) -> list[int]:
        """Token ids allowed after `prefix`; at the root only the begin tokens of `domains`."""
        if not prefix and domains is not None:
            return [self.begin_id[d] for d in domains if d in self.begin_id]
        return self.trie.get(prefix, [])


def load_sid_tokens(run_dir: Path):
    """The run's tokenizer and its SID token mapping."""
    tok = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    return tok, SidTokens(SidCodec.load(run_dir / "itemic" / "sid_map.parquet"), tok)
