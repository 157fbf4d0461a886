"""Byte-level BPE tokenizer (the `tokenizers` library) and GuppyLM's chat template.

Special ids are fixed: <pad>=0, <|im_start|>=1, <|im_end|>=2. A sample is
"<|im_start|>user\\n{input}<|im_end|>\\n<|im_start|>assistant\\n{output}<|im_end|>".
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, IM_START, IM_END = "<pad>", "<|im_start|>", "<|im_end|>"
SPECIALS = (PAD, IM_START, IM_END)  # ids 0, 1, 2, in this order
MIN_VOCAB = 256 + len(SPECIALS)  # every byte, plus the specials
MAX_VOCAB = 65_536  # far more than a small model's data needs (Guppy's uses ~1,500)


def format_turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}"


def format_chat(user: str, assistant: str) -> str:
    return format_turn("user", user) + "\n" + format_turn("assistant", assistant)


def format_prompt(user: str) -> str:
    """What the model sees before it answers: the user turn and an open assistant turn."""
    return format_turn("user", user) + f"\n{IM_START}assistant\n"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    check_specials(tok)
    return tok


def check_specials(tok: Tokenizer, where: str = "tokenizer") -> None:
    for want_id, token in enumerate(SPECIALS):
        got = tok.token_to_id(token)
        if got != want_id:
            raise ValueError(f"{where}: {token} must have id {want_id}, found {got}")


def load_tokenizer(path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path} (run `python -m guppy_jax.prepare`)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust library raises plain Exceptions for any damage
        reason = " ".join(str(err).split())[:160]
        raise ValueError(f"{path}: not a readable tokenizer file ({reason}); prepare the data again "
                         f"or copy a good tokenizer.json") from None
    check_specials(tok, str(path))
    return tok


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text).ids


def decode(tok: Tokenizer, ids: Iterable[int], skip_special: bool = True) -> str:
    return tok.decode(list(ids), skip_special_tokens=skip_special)
