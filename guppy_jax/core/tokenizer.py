"""Byte-level BPE tokenizer (the `tokenizers` library) and GuppyLM's chat template.

Special ids are fixed: <pad>=0, <|im_start|>=1, <|im_end|>=2. A sample is
"<|im_start|>user\\n{input}<|im_end|>\\n<|im_start|>assistant\\n{output}<|im_end|>".

A tokenizer trained for a character that writes only lowercase also *reads* lowercase (a
`Lowercase` normalizer): "Hi GUPPY!" then gives the ids of "hi guppy!", so the model never
has to learn that capital letters, which byte-level BPE splits into other and more tokens,
mean the same words. Lowercasing loses nothing such a character must write
(`lowercase_loses_nothing`); for data whose answers use capitals it is left off.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

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


_ASSISTANT = re.compile(re.escape(IM_START) + r"assistant\n(.*?)(?:" + re.escape(IM_END) + "|$)", re.S)


def lowercase_loses_nothing(texts: Iterable[str]) -> bool:
    """True when every assistant turn of `texts` (the whole text where there is none) is
    already lowercase: a tokenizer that lowercases what it reads can still write all of it."""
    for text in texts:
        parts = _ASSISTANT.findall(text) or [text]
        if any(part != part.lower() for part in parts):
            return False
    return True


def reads_lowercase(tok: Tokenizer) -> bool:
    return isinstance(tok.normalizer, normalizers.Lowercase)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2,
                    lowercase: bool = False) -> Tokenizer:
    """Byte-level BPE with the fixed special ids; `lowercase`: the tokenizer lowercases what
    it reads (see the module docstring)."""
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
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


def tokenizer_remedy(path) -> str:
    """What to do about a tokenizer.json that is missing, damaged or wrong, by where it lies:
    a run directory's is a copy of its data directory's, a data directory's is rebuilt by
    preparing the data again."""
    folder = Path(path).parent
    if any((folder / name).exists() for name in ("checkpoints", "best", "config.json")):
        return (f"copy the tokenizer.json of the data directory this run was trained on (by default "
                f"data/generated/guppy/tokenizer.json; for an imported run, the one it was imported with) to "
                f"{path}; the run's checkpoints are not affected")
    if any((folder / name).exists() for name in ("train.jsonl", "eval.jsonl")):
        return "prepare the data again (with the command that made it), or copy a good tokenizer.json there"
    return f"prepare data with `python -m guppy_jax.prepare --out {folder}`, or copy a good tokenizer.json there"


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer at `path` (a tokenizer.json, or a directory holding one). A file that is
    missing, damaged or not a GuppyLM tokenizer raises one line that names it and says what
    to do (FileNotFoundError, ValueError)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path}: {tokenizer_remedy(path)}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust library raises plain Exceptions for any damage
        reason = " ".join(str(err).split())[:160]
        raise ValueError(f"{path} is damaged: not a readable tokenizer file ({reason}); "
                         f"{tokenizer_remedy(path)}") from None
    try:
        check_specials(tok, str(path))
    except ValueError as err:
        raise ValueError(f"{err}: not a GuppyLM tokenizer; {tokenizer_remedy(path)}") from None
    return tok


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text).ids


def decode(tok: Tokenizer, ids: Iterable[int], skip_special: bool = True) -> str:
    return tok.decode(list(ids), skip_special_tokens=skip_special)
