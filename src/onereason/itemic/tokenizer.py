"""A byte-level BPE tokenizer trained on the project's own text, or any HF tokenizer directory,
extended with item and special tokens."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from onereason.chat import SPECIALS as CHAT_SPECIALS

EOS, PAD = "<|endoftext|>", "<|pad|>"


def train_bpe(texts: list[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE (the GPT-2 / Qwen family's scheme) trained from scratch on `texts`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[EOS, PAD] + CHAT_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=None)


def build_tokenizer(texts: list[str], item_tokens: list[str], special_tokens: list[str],
                    base: Path | None = None, vocab_size: int = 4096):
    """Train a BPE tokenizer on `texts` (or load `base`), then add the item and special tokens.

    Item code tokens are plain added tokens (kept on decode); SID begin/end and chat markers
    are special tokens.
    """
    if base is not None:
        tok = AutoTokenizer.from_pretrained(str(base))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        specials = [t for t in CHAT_SPECIALS + special_tokens if t not in tok.get_vocab()]
    else:
        tok = train_bpe(texts, vocab_size)
        specials = special_tokens
    tok.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
    tok.add_tokens([t for t in item_tokens if t not in tok.get_vocab()])
    return tok
