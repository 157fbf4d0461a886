"""Loading conversations and cutting them into fixed-shape batches for jit.

Input files are JSONL, one record a line, in any of three forms:
  {"input": ..., "output": ...}          a single-turn conversation (GuppyLM's own data)
  {"text": ...}                           an already formatted sample
  {"messages": [{"role", "content"}...]}  a chat; each message becomes one turn
Anything malformed is an error naming the file, the line and the reason; nothing is skipped.

Batches are dicts of (B, T) int32 arrays: inputs, targets, loss_mask, positions,
segment_ids. Every batch of a run has the same shape, so the train step compiles once.
  padded: one conversation per row (as the original), right-padded to T;
  packed: conversations laid end to end in a row, each with its own segment id and
          positions from 0, so attention and targets never cross between them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.tokenizer import format_chat, format_turn


class DataError(ValueError):
    """Input data that cannot be trained on, with the file and line at fault."""


def record_text(record, where: str) -> str:
    """The formatted sample string of one record (any of the three forms)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: messages[{i}] needs string 'role' and 'content'")
            turns.append(format_turn(m["role"], m["content"]))
        return "\n".join(turns)
    if "text" in record:
        if not isinstance(record["text"], str) or not record["text"]:
            raise DataError(f"{where}: 'text' must be a non-empty string")
        return record["text"]
    if "input" in record or "output" in record:
        for key in ("input", "output"):
            if not isinstance(record.get(key), str):
                raise DataError(f"{where}: missing or non-string field {key!r}")
        return format_chat(record["input"], record["output"])
    raise DataError(f"{where}: record has none of 'input'/'output', 'text' or 'messages' "
                    f"(keys: {', '.join(sorted(record)) or 'none'})")


def parse_line(raw: bytes, where: str):
    """The JSON value of one JSONL line (bytes); None for a blank line. Bad UTF-8 or bad JSON
    is a DataError that names `where` ("file:line"), the reason and the column."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                        f"{err.start + 1})") from None
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None


def read_jsonl(path):
    """(where, record) for every non-blank line of a JSONL file; `where` is "file:line"."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            record = parse_line(raw, f"{path}:{lineno}")
            if record is not None:
                yield f"{path}:{lineno}", record


def load_texts(path) -> list[str]:
    """Every record of a JSONL file as a formatted sample string."""
    texts = [record_text(record, where) for where, record in read_jsonl(path)]
    if not texts:
        raise DataError(f"{path}: no records (the file is empty)")
    return texts


@dataclass
class Encoded:
    samples: list[np.ndarray]  # token ids, one array per conversation
    truncated: int = 0
    dropped: int = 0


def encode_texts(tok, texts: list[str], max_len: int, overflow: str = "truncate") -> Encoded:
    """Tokenize; samples longer than max_len tokens are truncated (keeping the start) or dropped."""
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    out = Encoded([])
    for enc in tok.encode_batch(texts):
        ids = np.asarray(enc.ids, np.int32)
        if len(ids) > max_len:
            if overflow == "drop":
                out.dropped += 1
                continue
            ids, out.truncated = ids[:max_len], out.truncated + 1
        if len(ids) >= 2:
            out.samples.append(ids)
        else:
            out.dropped += 1
    return out


def sample_lengths(samples) -> np.ndarray:
    """Each sample's length in tokens (int32): a token store knows them without reading a token."""
    lengths = getattr(samples, "lengths", None)
    return (np.asarray(lengths, np.int32) if lengths is not None
            else np.fromiter((len(s) for s in samples), np.int32, count=len(samples)))


def padded_row_len(samples, max_len: int, *more) -> int:
    """The row length for one-conversation-per-row batches: the longest sample (of `samples`
    and any `more` splits), rounded up to a multiple of 8, at most max_len. One fixed shape for
    the whole run."""
    longest = max(int(sample_lengths(split).max()) for split in (samples, *more) if len(split))
    return min(max_len, -(-longest // 8) * 8)


def take_rows(lengths: np.ndarray, order: np.ndarray, cursor: int, n_rows: int, seq_len: int,
              packed: bool) -> tuple[list[list[int]], int]:
    """Up to n_rows rows of sample indices, taken from `order` starting at `cursor`, and the
    cursor after them. Not packed: one sample a row. Packed: samples go into a row, in order,
    while they fit its seq_len tokens (a sample longer than the row starts a row of its own
    and is cut there); the last row of the order may be short. Only lengths are read."""
    if not packed:
        end = min(len(order), cursor + n_rows)
        return [[int(i)] for i in order[cursor:end]], end
    rows, row, used = [], [], 0
    while cursor < len(order) and len(rows) < n_rows:
        i = int(order[cursor])
        n = int(lengths[i])
        if used + n > seq_len and row:
            rows.append(row)
            row, used = [], 0
            continue
        row.append(i)
        used += n
        cursor += 1
    if row:  # the order ran out mid-row (a row is only begun while rows are missing)
        rows.append(row)
    return rows, cursor


def pack_rows(samples, order: np.ndarray, seq_len: int, packed: bool) -> list[list[np.ndarray]]:
    """Group samples (in `order`) into rows of at most seq_len tokens: one each when not packed."""
    index_rows, _ = take_rows(sample_lengths(samples), order, 0, len(order), seq_len, packed)
    return [[samples[i] for i in row] for row in index_rows]


def shifted_batch(seqs, width: int, pad_id: int = 0) -> dict:
    """Token sequences, each right-padded to `width` tokens, shifted into (B, width - 1)
    `inputs`/`targets`/`loss_mask` (int64, as PyTorch wants them): the original's batch,
    one conversation per row, a target counting where it is not padding."""
    seq = np.full((len(seqs), width), pad_id, np.int64)
    for row, ids in enumerate(seqs):
        seq[row, :len(ids)] = ids
    targets = seq[:, 1:]
    return {"inputs": seq[:, :-1], "targets": targets, "loss_mask": targets != pad_id}


def stack_batches(batches: list[dict]) -> dict:
    """k batches of (B, T) arrays -> one batch of (k, B, T) arrays, for `steps.train_steps`."""
    return {key: np.stack([b[key] for b in batches]) for key in batches[0]}


def make_batch(rows: list[list[np.ndarray]], seq_len: int, pad_id: int = 0) -> dict:
    """Rows of conversations -> the (B, seq_len) arrays. Target t is the next token of the
    same conversation; targets across a boundary or onto padding are masked out."""
    B = len(rows)
    inputs = np.full((B, seq_len), pad_id, np.int32)
    positions = np.zeros((B, seq_len), np.int32)
    segments = np.zeros((B, seq_len), np.int32)
    for b, row in enumerate(rows):
        at = 0
        for seg, ids in enumerate(row, start=1):
            n = min(len(ids), seq_len - at)
            inputs[b, at:at + n] = ids[:n]
            positions[b, at:at + n] = np.arange(n)
            segments[b, at:at + n] = seg
            at += n
    targets = np.full_like(inputs, pad_id)
    targets[:, :-1] = inputs[:, 1:]
    same = np.zeros_like(segments, dtype=bool)
    same[:, :-1] = (segments[:, 1:] == segments[:, :-1]) & (segments[:, :-1] > 0)
    return {"inputs": inputs, "targets": np.where(same, targets, pad_id), "loss_mask": same,
            "positions": positions, "segment_ids": segments}


class Batches:
    """Endless, deterministic, resumable batches of one fixed shape (batch_size, seq_len).

    Epoch e visits the samples in the order of permutation(seed, e) and lays them into rows
    (`take_rows`) one batch at a time, from a cursor into that order; the last partial batch
    of an epoch is left out so the shape never changes. `position` is (epoch, index, cursor):
    `seek` restores it to continue exactly where a run stopped, with no pass over the data.
    Memory: each sample's length, and one epoch's order (4 and 8 bytes a sample).

    `rows` (a slice of the batch's rows, or None for all): only those rows are read and
    filled; the others stay padding. With many processes each fills the rows its devices hold.
    """

    def __init__(self, samples, batch_size: int, seq_len: int, packed: bool,
                 seed: int = 0, pad_id: int = 0, shuffle: bool = True, rows: slice | None = None):
        if not len(samples):
            raise DataError("no samples to batch")
        self.samples, self.batch_size, self.seq_len = samples, batch_size, seq_len
        self.packed, self.seed, self.pad_id, self.shuffle = packed, seed, pad_id, shuffle
        self.rows = rows
        self.lengths = sample_lengths(samples)
        self._order: tuple[int, np.ndarray] | None = None
        self.epoch, self.index, self.cursor = 0, 0, 0
        if len(take_rows(self.lengths, self.order(0), 0, batch_size, seq_len, packed)[0]) < batch_size:
            raise DataError(f"batch size {batch_size} is larger than the data: "
                            f"{self.batches_per_epoch(0, batch_size=1)} rows of {seq_len} tokens "
                            f"from {len(samples)} samples ({'packed' if packed else 'padded'})")

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            n = len(self.lengths)
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
        return self._order[1]

    def batches_per_epoch(self, epoch: int | None = None, batch_size: int | None = None) -> int:
        """Full batches in an epoch: one pass over its order's lengths (no token is read)."""
        rows, _ = take_rows(self.lengths, self.order(self.epoch if epoch is None else epoch), 0,
                            len(self.lengths), self.seq_len, self.packed)
        return len(rows) // (batch_size or self.batch_size)

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "cursor": self.cursor}

    def seek(self, position: dict) -> None:
        """Go to a saved position. One saved before positions had a cursor is replayed from
        its epoch's start (lengths only)."""
        epoch, index = int(position["epoch"]), int(position["index"])
        if "cursor" in position:
            self.epoch, self.index, self.cursor = epoch, index, int(position["cursor"])
            return
        self.epoch, self.index, self.cursor = epoch, 0, 0
        for _ in range(index):
            self._next_rows()

    def _next_rows(self) -> list[list[int]]:
        rows, cursor = take_rows(self.lengths, self.order(self.epoch), self.cursor, self.batch_size,
                                 self.seq_len, self.packed)
        if len(rows) < self.batch_size:  # the epoch's last partial batch is left out
            self.epoch, self.index = self.epoch + 1, 0
            rows, cursor = take_rows(self.lengths, self.order(self.epoch), 0, self.batch_size,
                                     self.seq_len, self.packed)
        self.cursor, self.index = cursor, self.index + 1
        return rows

    def _batch(self, index_rows: list[list[int]]) -> dict:
        wanted = range(len(index_rows))[self.rows] if self.rows is not None else range(len(index_rows))
        rows = [[self.samples[i] for i in row] if b in wanted else [] for b, row in enumerate(index_rows)]
        return make_batch(rows, self.seq_len, self.pad_id)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self._batch(self._next_rows())

    def one_pass(self):
        """Every full batch of the current epoch's order once, from its start (for
        evaluation), without moving position."""
        order, cursor = self.order(self.epoch), 0
        while True:
            rows, cursor = take_rows(self.lengths, order, cursor, self.batch_size, self.seq_len, self.packed)
            if len(rows) < self.batch_size:
                return
            yield self._batch(rows)


def mean_eval_loss(eval_fn, state, batches, max_batches: int) -> float:
    """Mean cross-entropy per target token over at most max_batches of `batches`
    (summed loss / summed count from eval_fn, so every token weighs the same)."""
    loss_sum, tokens = 0.0, 0.0
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        got = eval_fn(state, batch)
        loss_sum, tokens = loss_sum + float(got["loss_sum"]), tokens + float(got["tokens"])
    return loss_sum / max(tokens, 1.0)


def non_pad_share(batch: dict) -> float:
    """Share of the batch's slots that hold a real token."""
    return float((batch["segment_ids"] > 0).mean())
