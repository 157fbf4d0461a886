"""The token store: each split's conversations tokenized once by `prepare`, mapped by `train`.

    {split}.tokens       every conversation's token ids laid end to end, raw uint16 (the vocab
                         is at most 65,536 ids, so every id fits)
    {split}.offsets.npy  int64, one more than there are conversations: conversation i is
                         tokens[offsets[i]:offsets[i + 1]]

`train` maps both files (numpy memmap) instead of reading and tokenizing the JSONL again, so
its start-up costs the same whatever the corpus size: what it holds in memory is the length
of each conversation (4 bytes each), and a batch reads only the tokens it uses. The full
conversation is stored; the run's context length cuts it when it is read, so one store serves
every --max-seq-len.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TOKEN_DTYPE = np.uint16


def store_files(split: str) -> tuple[str, str]:
    return f"{split}.tokens", f"{split}.offsets.npy"


def has_store(folder, split: str = "train") -> bool:
    return all((Path(folder) / name).is_file() for name in store_files(split))


class TokenWriter:
    """Appends conversations' token ids to `{split}.tokens` as they are encoded, a chunk at a
    time; `close` writes the offsets. Memory: the offsets (8 bytes a conversation)."""

    def __init__(self, folder, split: str):
        tokens, offsets = store_files(split)
        self.tokens_path, self.offsets_path = Path(folder) / tokens, Path(folder) / offsets
        self.file = open(self.tokens_path, "wb")
        self.ends: list[np.ndarray] = []
        self.total = 0

    def add(self, id_lists) -> np.ndarray:
        """Append conversations (lists of ids); returns their lengths."""
        lengths = np.fromiter((len(ids) for ids in id_lists), np.int64, count=len(id_lists))
        if len(lengths):
            flat = np.fromiter((i for ids in id_lists for i in ids), np.int64, count=int(lengths.sum()))
            if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(TOKEN_DTYPE).max):
                raise ValueError(f"token ids must fit {np.dtype(TOKEN_DTYPE).name}, found {flat.min()}..{flat.max()}")
            self.file.write(flat.astype(TOKEN_DTYPE).tobytes())
            self.ends.append(self.total + np.cumsum(lengths))
            self.total += int(lengths.sum())
        return lengths

    def close(self) -> int:
        """Finish both files; returns the number of conversations."""
        self.file.close()
        offsets = np.concatenate([np.zeros(1, np.int64), *self.ends])
        np.save(self.offsets_path, offsets)
        return len(offsets) - 1

    def abandon(self) -> None:
        self.file.close()


class StoredSamples:
    """One split of a token store as a sequence of int32 arrays, each cut to `max_len` tokens;
    conversations under 2 tokens (nothing to predict) are left out, as when encoding texts.

    `lengths` (int32, one per kept conversation, after the cut) is all that batching needs to
    lay out rows; `sample[i]` reads conversation i's tokens from the mapped file."""

    def __init__(self, folder, split: str, max_len: int):
        tokens, offsets = store_files(split)
        self.where = Path(folder) / tokens
        self.offsets = np.load(Path(folder) / offsets, mmap_mode="r")
        n_tokens = int(self.offsets[-1]) if len(self.offsets) else 0
        size = os.path.getsize(self.where)
        if len(self.offsets) == 0 or size != n_tokens * np.dtype(TOKEN_DTYPE).itemsize:
            raise ValueError(f"{self.where}: {size} bytes, but its offsets index {n_tokens} tokens "
                             f"(files from different prepares, or cut short)")
        # an empty file cannot be mapped; an empty split has no token to read anyway
        self.tokens = (np.memmap(self.where, TOKEN_DTYPE, mode="r") if n_tokens
                       else np.zeros(0, TOKEN_DTYPE))
        full = np.diff(np.asarray(self.offsets))
        self.keep = np.flatnonzero(full >= 2)
        self.starts = np.asarray(self.offsets[:-1])[self.keep]
        self.lengths = np.minimum(full[self.keep], max_len).astype(np.int32)
        self.truncated = int(np.count_nonzero(full[self.keep] > max_len))
        self.dropped = int(len(full) - len(self.keep))

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start = int(self.starts[i])
        return np.asarray(self.tokens[start:start + int(self.lengths[i])], np.int32)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
