"""A prepared data directory: written from a persona, read back for training.

    train.jsonl, eval.jsonl   the conversations (5% held out), for people to read
    tokenizer.json            byte-level BPE with <pad>=0, <|im_start|>=1, <|im_end|>=2
    train.tokens, train.offsets.npy, eval.tokens, eval.offsets.npy
                              the same conversations tokenized once: the token store
                              (guppy_jax.data.store) that `train` maps
    summary.json              counts, per-topic balance, padded/packed fill shares, and the
                              sha256 and size of each file above, with their `digest`

`prepare` writes one (the `prepare` command is a thin wrapper around it, and `prepare --from`
in guppy_jax.owndata writes the same files); `ensure_prepared` is the one rule for a missing
directory: the default Guppy directory is generated on first use (and again when a file is
missing), any other is an error that says how to make it. `load_for_training` reads one for
`train` and refuses files that do not belong together: their digest is not the one in
summary.json (a directory without a digest, from before there was one, is read unchecked).
The files are hashed again only when one's size differs from summary.json's or one is newer
than summary.json (written last), so a large corpus starts as fast as a small one, and the
files prepare writes stay byte-identical for a seed. A directory prepared before the token store
(JSONL and tokenizer only) is read as it always was: its texts are tokenized at start.

A data directory is replaced whole, never file by file, so it is always either the old one
or the new one. For a directory D in a folder P, prepare keeps beside it, in P:

    .D.prepare-lock   an flock held by the one process that writes D (another prepare into D
                      is refused, naming its pid); the OS drops it when the process dies, and
                      the holder removes the file when it is done
    .D.prepare-new    the new directory, written whole and flushed to disk before the swap
    .D.prepare-old    the old directory, moved aside only for the moment of the swap

The swap: rename D to .D.prepare-old, rename .D.prepare-new to D, delete .D.prepare-old.
The rename of the new directory to D is the one moment a prepare takes effect. Recovery, by
the next prepare (under the lock, before anything else) and by whatever reads D first (train,
ensure_prepared): when D is missing and .D.prepare-old exists, the prepare was killed between
the two renames, and .D.prepare-old is renamed back to D, so D is the old directory; then
every .D.prepare-new and .D.prepare-old left is deleted (a reader leaves them to the prepare
that is running, if one is). A failed prepare (a bad file, Ctrl-C, a full disk) deletes its
.D.prepare-new itself and leaves D as it was.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.paths import DEFAULT_DATA, DEFAULT_PERSONA
from .batches import (Batches, DataError, encode_texts, load_texts, padded_row_len, read_jsonl, record_text,
                      sample_lengths, take_rows)
from .store import StoredSamples, TokenWriter, has_store, store_files
from ..core.faults import moment
from ..core.memory import check_prepare_fits
from .persona import conversations, load_persona, split, summarize, write_jsonl
from ..core.tokenizer import (MAX_VOCAB, MIN_VOCAB, format_chat, load_tokenizer, lowercase_loses_nothing,
                        train_tokenizer)

DATA_FILES = ("train.jsonl", "eval.jsonl", "tokenizer.json")
STORE_FILES = (*store_files("train"), *store_files("eval"))
ALL_FILES = (*DATA_FILES, *STORE_FILES, "summary.json")
ENCODE_CHUNK = 8192  # conversations tokenized (and held) at a time while writing the store


# ----------------------------------------------------------------------------- digests
def file_digest(path) -> str:
    """sha256 of a file's bytes, in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def digested(files) -> tuple[str, ...]:
    """The files a digest covers: DATA_FILES, and the token store when there is one."""
    return (*DATA_FILES, *STORE_FILES) if all(name in files for name in STORE_FILES) else DATA_FILES


def files_digest(files: dict) -> str:
    """The digest of a data directory: sha256 over "NAME SHA256\\n" of each file it covers."""
    return hashlib.sha256("".join(f"{name} {files[name]}\n" for name in digested(files)).encode()).hexdigest()


def write_store(folder: Path, split: str, tok, texts) -> np.ndarray:
    """Tokenize `texts` (any iterable) a chunk at a time into the split's token store;
    returns every conversation's length in tokens (int64), uncut."""
    writer, lengths = TokenWriter(folder, split), []
    try:
        chunk = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == ENCODE_CHUNK:
                lengths.append(writer.add([enc.ids for enc in tok.encode_batch(chunk)]))
                chunk = []
        if chunk:
            lengths.append(writer.add([enc.ids for enc in tok.encode_batch(chunk)]))
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def jsonl_texts(path: Path):
    """The formatted text of every record of a JSONL file that prepare wrote, one at a time."""
    return (record_text(record, where) for where, record in read_jsonl(path))


def finish(folder: Path, summary: dict) -> None:
    """summary.json, last, with each file's sha256 (`files`) and size (`sizes`) and their
    `digest` added to `summary`."""
    names = [name for name in (*DATA_FILES, *STORE_FILES) if (folder / name).exists()]
    files = {name: file_digest(folder / name) for name in names}
    summary.update(files=files, digest=files_digest(files),
                   sizes={name: os.path.getsize(folder / name) for name in names})
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    moment("prepare.summary_written")


def write_data(folder: Path, train: list[dict], held_out: list[dict], tok, summary: dict) -> dict:
    """The data directory's files into `folder` (a new directory): the JSONL pair, the token
    store, the tokenizer and summary.json last (see `finish`). Returns each split's lengths
    in tokens, uncut."""
    write_jsonl(folder / "train.jsonl", train)
    moment("prepare.train_written")
    write_jsonl(folder / "eval.jsonl", held_out)
    moment("prepare.eval_written")
    lengths = {split: write_store(folder, split, tok, (record_text(r, split) for r in records))
               for split, records in (("train", train), ("eval", held_out))}
    moment("prepare.store_written")
    tok.save(str(folder / "tokenizer.json"))
    moment("prepare.tokenizer_written")
    return lengths


def checked_digest(data_dir: Path) -> str | None:
    """The data directory's digest, checked against its files; None for a directory prepared
    before there were digests (or without a summary.json). Files from different prepares (or
    edited since) are a DataError that says so."""
    path = data_dir / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not readable JSON ({err}): run prepare again for {data_dir}") from None
    if not isinstance(summary, dict) or "digest" not in summary:
        return None
    recorded = summary.get("files") if isinstance(summary.get("files"), dict) else {}
    names = digested(recorded)
    sizes = summary.get("sizes") if isinstance(summary.get("sizes"), dict) else {}
    try:  # as prepare left them (the same size, none newer than summary.json): not read again
        written = os.stat(path).st_mtime_ns
        if sizes and all(sizes.get(name) == os.path.getsize(data_dir / name) and
                         os.stat(data_dir / name).st_mtime_ns <= written for name in names):
            return summary["digest"]
    except OSError:
        pass
    files = {name: file_digest(data_dir / name) if (data_dir / name).exists() else "missing" for name in names}
    if files_digest(files) == summary["digest"]:
        return summary["digest"]
    differ = [name for name in names if recorded.get(name) != files[name]] or list(names)
    raise DataError(f"{data_dir}: its files come from different prepares ({', '.join(differ)} "
                    f"{'is' if len(differ) == 1 else 'are'} not what its summary.json was written with): "
                    f"run prepare again to make {data_dir} whole")


# ----------------------------------------------------------------------------- replacing a directory whole
def _target(data_dir) -> Path:
    return Path(data_dir).expanduser().resolve()


def beside(target: Path, kind: str) -> Path:
    """The lock file ("lock") or temporary directory ("new", "old") of a data directory."""
    return target.parent / f".{target.name}.prepare-{kind}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if not path.is_dir() or err.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
            raise  # a directory on some file systems cannot be flushed; a file must be
    finally:
        os.close(fd)


_held: dict[Path, int] = {}  # the data directories this process holds the lock of (re-entrant)


class DataDirLock:
    """The exclusive lock on a data directory for the process that replaces it: an flock on
    its `.D.prepare-lock` beside it (D itself is swapped, so the lock cannot live inside). The
    OS drops it when the process ends, even by SIGKILL, so it never goes stale; the holder
    removes the file as it lets go. `wait`: wait for the holder instead of refusing."""

    def __init__(self, data_dir, wait: bool = False, quiet: bool = True):
        self.target, self.shown, self.wait, self.quiet = _target(data_dir), data_dir, wait, quiet
        self.path, self.file = beside(self.target, "lock"), None

    def __enter__(self):
        if self.target in _held:
            _held[self.target] += 1
            return self
        self.target.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                if not self.wait:
                    file.close()
                    raise DataError(f"{self.shown} is being written by another process (pid {holder}): wait "
                                    f"for it to finish, or choose another --out") from None
                if not (self.quiet or told):
                    print(f"waiting for pid {holder}, which is writing {self.shown}", file=sys.stderr)
                    told = True
                fcntl.flock(file, fcntl.LOCK_EX)
            try:  # the file locked must still be the one at the path: a holder removes it as it ends
                if os.fstat(file.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            file.close()
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self.file, _held[self.target] = file, 1
        return self

    def __exit__(self, *exc):
        _held[self.target] -= 1
        if _held[self.target] == 0:
            del _held[self.target]
            self.path.unlink(missing_ok=True)  # while still locked: the next one locks a new file
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
        return False


def recover(target: Path) -> None:
    """Under the lock: undo what a killed prepare left (the rule in the module docstring)."""
    old, new = beside(target, "old"), beside(target, "new")
    if old.exists() and not target.exists():  # killed between the two renames of a swap
        os.rename(old, target)
        _fsync(target.parent)
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)


def settle(data_dir) -> None:
    """What a reader does before reading a data directory: recover from a prepare killed
    mid-swap (waiting for one that is swapping right now), and delete what killed prepares
    left when none is running. A reader that may not write the folder leaves the leftovers."""
    target = _target(data_dir)
    old, new = beside(target, "old"), beside(target, "new")
    if not (old.exists() or new.exists()):
        return
    mid_swap = old.exists() and not target.exists()
    try:
        with DataDirLock(target, wait=mid_swap):
            recover(target)
    except DataError:
        return  # a prepare is running: the temporary directories are its own
    except OSError as err:
        if mid_swap:
            raise DataError(f"{target} is missing: a prepare was killed while swapping it, and its old files in "
                            f"{old} could not be moved back ({err.strerror}): rename {old} to {target}") from None


def check_replaceable(target: Path, shown) -> None:
    """Only a data directory (or an empty one) is replaced: prepare never deletes other files."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"--out {shown} is a file, not a directory")
    other = sorted(p.name for p in target.iterdir() if p.name not in ALL_FILES or p.is_symlink() or not p.is_file())
    if other:
        names = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise ValueError(f"--out {shown} holds files that are not a data directory's ({names}): prepare replaces "
                         f"the whole directory, so choose a new or empty --out, or move them out first")


def _no_room(err: BaseException) -> tuple[str, str] | None:
    """(what happened, what to do) when a write failed for want of room; None for any other failure."""
    if not (isinstance(err, OSError) or type(err) is Exception):  # tokenizers: a plain Exception
        return None
    text, code = str(err), getattr(err, "errno", None)
    elsewhere = "or choose an --out on another disk"
    if code == errno.ENOSPC or "No space left" in text:
        return "the disk is full", f"free some space ({elsewhere})"
    if code == errno.EDQUOT or "quota exceeded" in text.lower():
        return "the disk quota is used up", f"free some space ({elsewhere})"
    if code == errno.EFBIG or "File too large" in text:
        return "a file grew past the file size limit", "raise the limit (ulimit -f, or an --out on another disk)"
    return None


def _swap(new: Path, target: Path) -> None:
    old = beside(target, "old")
    if target.exists():
        os.rename(target, old)
        moment("prepare.old_aside")
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
    else:
        os.rename(new, target)
    _fsync(target.parent)
    moment("prepare.swapped")
    if old.exists():
        for path in sorted(old.iterdir()):
            path.unlink()
            moment("prepare.old_file_removed")
        old.rmdir()
        moment("prepare.old_removed")


@contextmanager
def replacing(out, wait: bool = False, quiet: bool = True):
    """A new, empty directory beside `out` to write a data directory into; when the block
    ends without an error it is flushed and swapped in as `out` whole. The block runs under
    `out`'s lock, after recovering from a killed prepare; on any failure the new directory is
    deleted and `out` is left as it was. Running out of room is a one-line DataError."""
    target = _target(out)
    if target.parent == target:
        raise ValueError(f"--out {out} cannot be replaced: choose a directory inside it")
    had_old = target.exists()
    try:
        with DataDirLock(out, wait, quiet):
            recover(target)
            check_replaceable(target, out)
            had_old = target.exists()
            new = beside(target, "new")
            new.mkdir()
            moment("prepare.locked")
            try:
                yield new
                for path in [*new.iterdir(), new]:
                    _fsync(path)
                moment("prepare.synced")
                _swap(new, target)
            except BaseException:
                shutil.rmtree(new, ignore_errors=True)
                raise
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises plain Exceptions
        room = _no_room(err)
        if room is None:
            raise
        kept = f"the data directory {out} is untouched" if had_old else f"no data directory was made at {out}"
        raise DataError(f"{room[0]}: prepare stopped and removed its partial files, and {kept}: {room[1]} and run "
                        f"prepare again") from None


# ----------------------------------------------------------------------------- prepare from a persona
def fill_shares(samples, seq_len: int = 128) -> dict:
    """Share of row slots that hold real tokens, one conversation per row vs packed."""
    return fill_of_lengths(sample_lengths(samples), seq_len)


def fill_of_lengths(lengths, seq_len: int = 128) -> dict:
    """fill_shares from conversations' lengths in tokens, as train would cut them (to
    seq_len) and leave them out (under 2 tokens)."""
    lengths = np.asarray(lengths)
    lengths = np.minimum(lengths[lengths >= 2], seq_len)
    order, tokens = np.arange(len(lengths)), int(lengths.sum())
    return {mode: tokens / (len(take_rows(lengths, order, 0, len(order), seq_len, packed)[0]) * seq_len)
            for mode, packed in (("padded", False), ("packed", True))}


def prepare(persona_path=DEFAULT_PERSONA, out=DEFAULT_DATA, samples: int = 60_000, seed: int = 42,
            vocab_size: int = 4096, eval_fraction: float = 0.05, quiet: bool = False) -> dict:
    """Generate, split and train the tokenizer, then swap the data directory in whole;
    returns the summary."""
    start = time.perf_counter()
    persona = load_persona(persona_path)
    if samples < 2:
        raise ValueError(f"--samples must be at least 2, got {samples}")
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size must be in [{MIN_VOCAB}, {MAX_VOCAB}] (the 256 byte tokens and 3 "
                         f"specials at least), got {vocab_size}")
    check_prepare_fits(samples)
    out = Path(out)
    with replacing(out, quiet=quiet) as new:
        records = conversations(persona, samples, seed)
        train, held_out = split(records, eval_fraction)
        train_texts = [format_chat(r["input"], r["output"]) for r in train]
        lowercase = lowercase_loses_nothing(train_texts + [format_chat(r["input"], r["output"]) for r in held_out])
        tok = train_tokenizer(train_texts, vocab_size, lowercase=lowercase)
        summary = summarize(records)
        lengths = write_data(new, train, held_out, tok, summary)["train"]
        summary.update(persona=persona.name, seed=seed, train=len(train), eval=len(held_out),
                       vocab_used=tok.get_vocab_size(), vocab_size=vocab_size, reads_lowercase=lowercase,
                       fill_at_128=fill_of_lengths(lengths), truncated_at_128=int(np.count_nonzero(lengths > 128)))
        finish(new, summary)
    if not quiet:
        print_summary(summary, out, time.perf_counter() - start)
    return summary


def print_summary(summary: dict, out: Path, seconds: float) -> None:
    counts = summary["per_topic"].values()
    print(f"persona {summary['persona']!r}: {summary['samples']} samples over {summary['topics']} topics "
          f"({min(counts)}-{max(counts)} each), {summary['unique_share']:.1%} unique outputs")
    fill = summary["fill_at_128"]
    reads = ", reads input lowercased" if summary["reads_lowercase"] else ""
    print(f"  train {summary['train']}, eval {summary['eval']}; tokenizer: {summary['vocab_used']} of "
          f"{summary['vocab_size']} ids used{reads}; real tokens in 128-token rows: {fill['padded']:.1%} one "
          f"conversation per row, {fill['packed']:.1%} packed")
    print(f"  written to {out} in {seconds:.1f}s")


def ensure_prepared(data_dir, vocab_size: int = 4096, quiet: bool = False) -> Path:
    """The data directory, generated first if it is the default one and missing or incomplete
    (another process generating it is waited for); any other missing directory or file is a
    DataError that names it. A prepare killed mid-swap is recovered from first."""
    data_dir = Path(data_dir)
    settle(data_dir)
    if not all((data_dir / name).exists() for name in DATA_FILES) and _target(data_dir) == _target(DEFAULT_DATA):
        with DataDirLock(data_dir, wait=True, quiet=quiet):
            recover(_target(data_dir))
            if not all((data_dir / name).exists() for name in DATA_FILES):  # another process may have made it
                if not quiet:
                    print(f"no data in {data_dir}: generating the Guppy dataset and tokenizer first")
                prepare(out=data_dir, vocab_size=vocab_size, quiet=quiet)
    if not (data_dir / "train.jsonl").exists():
        raise DataError(f"missing data file {data_dir / 'train.jsonl'} (prepare it with "
                        f"`python -m guppy_jax.prepare --out {data_dir}`)")
    for name in DATA_FILES[1:]:
        if not (data_dir / name).exists():
            raise DataError(f"missing data file {data_dir / name}")
    return data_dir


def load_samples(data_dir, max_len: int, vocab_size: int = 4096, split_name: str = "train"):
    """Token-id arrays of one split (load-or-prepare), for bench and compare: the token
    store's, or the JSONL's tokenized for a directory prepared before there was a store."""
    data_dir = ensure_prepared(data_dir, vocab_size, quiet=True)
    if has_store(data_dir, split_name):
        return StoredSamples(data_dir, split_name, max_len)
    tok = load_tokenizer(data_dir / "tokenizer.json")
    return encode_texts(tok, load_texts(data_dir / f"{split_name}.jsonl"), max_len).samples


@dataclass
class TrainingData:
    tok: object          # tokenizers.Tokenizer
    train: Batches
    eval: Batches
    report: dict         # sample counts, truncated/dropped, the row length used
    digest: str | None = None            # the data directory's (summary.json); None: prepared before digests
    tokenizer_digest: str | None = None  # sha256 of the tokenizer.json the texts were encoded with
    notes: tuple[str, ...] = ()          # how the data was read, when not from its token store


# A vocab grown to fit a tokenizer is rounded up to this: the tied embedding is also the output
# head's matmul, whose width then stays a multiple of the GPU's tile sizes, as 2048 and 4096 are.
VOCAB_MULTIPLE = 64


def fit_vocab(cfg, data_dir) -> tuple[object, str]:
    """(cfg, note): the TrainConfig with a model vocab that holds every id of the data's
    tokenizer. A preset's vocab that is large enough is kept (so guppy-9m stays the original's
    8.7M model on data whose tokenizer uses fewer ids); a smaller one grows to the tokenizer's
    size rounded up to VOCAB_MULTIPLE, and the note says so."""
    have = load_tokenizer(Path(data_dir) / "tokenizer.json").get_vocab_size()
    if have <= cfg.model.vocab_size:
        return cfg, ""
    grown = -(-have // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    note = (f"vocab {grown}: the tokenizer's {have} ids rounded up to a multiple of {VOCAB_MULTIPLE} "
            f"(the preset's {cfg.model.vocab_size} is too small)")
    return cfg.replace(model=cfg.model.replace(vocab_size=grown)), note


def _identity(data_dir: Path):
    """Which directory is at data_dir now: a swap by a prepare changes it."""
    try:
        info = os.stat(data_dir)
    except OSError:
        return None
    return info.st_dev, info.st_ino


@dataclass
class Splits:
    train: object  # StoredSamples, or a list of int32 arrays
    eval: object
    truncated: int
    dropped: int
    note: str = ""


def read_splits(data_dir: Path, tok, tokenizer_digest: str, max_len: int) -> Splits:
    """Both splits' samples: mapped from the token store when the directory has one made with
    this tokenizer, else the JSONL tokenized now (a directory prepared before the store, or a
    run that reads its data with another run's tokenizer), with a note that says so."""
    own = data_dir / "tokenizer.json"
    if has_store(data_dir, "train") and has_store(data_dir, "eval") and own.exists() and \
            file_digest(own) == tokenizer_digest:
        try:
            train, held = StoredSamples(data_dir, "train", max_len), StoredSamples(data_dir, "eval", max_len)
        except ValueError as err:
            raise DataError(f"{err}: run prepare again for {data_dir}") from None
        return Splits(train, held, train.truncated + held.truncated, train.dropped + held.dropped)
    train = encode_texts(tok, load_texts(data_dir / "train.jsonl"), max_len)
    held = encode_texts(tok, load_texts(data_dir / "eval.jsonl"), max_len)
    note = ("texts tokenized with the run's own tokenizer" if has_store(data_dir, "train") else
            "texts tokenized at start (the directory has no token store: prepare it again to start faster)")
    return Splits(train.samples, held.samples, train.truncated + held.truncated, train.dropped + held.dropped, note)


def _read(cfg, data_dir: Path, tokenizer: Path):
    tok = load_tokenizer(tokenizer)
    if tok.get_vocab_size() > cfg.model.vocab_size:
        raise DataError(f"{tokenizer} has {tok.get_vocab_size()} ids but the model's vocab_size is "
                        f"{cfg.model.vocab_size}: pass --vocab-size {tok.get_vocab_size()} or larger, or "
                        f"leave --vocab-size out to fit it to the tokenizer")
    digest, tokenizer_digest = checked_digest(data_dir), file_digest(tokenizer)
    return tok, read_splits(data_dir, tok, tokenizer_digest, cfg.model.max_seq_len), digest, tokenizer_digest


def split_batches(split_name: str, samples, cfg, seq_len: int, data_dir: Path, **kw) -> Batches:
    """Batches of one split; a split too small for one batch says which, and what to do."""
    try:
        return Batches(samples, cfg.batch_size, seq_len, cfg.packing, **kw)
    except DataError:
        if len(samples):
            rows = Batches(samples, 1, seq_len, cfg.packing, **kw).batches_per_epoch(0)
            n, packing = len(samples), "packed" if cfg.packing else "padded"
            has = (f"has {n} sample{'' if n == 1 else 's'} ({rows} row{'' if rows == 1 else 's'} of {seq_len} "
                   f"tokens, {packing}), fewer than one batch of {cfg.batch_size}: pass --batch-size {rows} or "
                   f"less, or")
        else:
            has = "has no sample of 2 tokens or more:"
        more = ("a larger --eval-fraction, or more --samples or --from records" if split_name == "eval" else
                "more --samples or --from records")
        raise DataError(f"{data_dir}: the {split_name} split {has} prepare more {split_name} data ({more})") from None


def load_for_training(cfg, data_dir, quiet: bool = False, tokenizer=None, rows: slice | None = None) -> TrainingData:
    """Tokenizer and fixed-shape train/eval batches for a TrainConfig; fails early (DataError)
    on missing files, files from different prepares (by summary.json's digest), a tokenizer
    larger than the model's vocab or a split smaller than one batch.
    `tokenizer` (a tokenizer.json path) encodes the texts instead of the data directory's own:
    a run that starts from another run's weights reads any data with that run's tokenizer.
    A prepare that swaps the directory while it is read makes it read the new one again.
    `rows`: the rows of each train batch this process fills (Batches), None for all."""
    given = data_dir
    for attempt in (1, 2):
        data_dir = ensure_prepared(given, cfg.model.vocab_size, quiet)
        seen = _identity(data_dir)
        path = Path(tokenizer) if tokenizer is not None else data_dir / "tokenizer.json"
        try:
            tok, splits, digest, tokenizer_digest = _read(cfg, data_dir, path)
        except (DataError, OSError):
            if attempt == 2 or _identity(data_dir) == seen:
                raise
            continue
        if _identity(data_dir) == seen:
            break
    seq_len = cfg.seq_len
    if seq_len == 0:
        seq_len = cfg.model.max_seq_len if cfg.packing else padded_row_len(splits.train, cfg.model.max_seq_len,
                                                                           splits.eval)
    train_batches = split_batches("train", splits.train, cfg, seq_len, data_dir, seed=cfg.seed, rows=rows)
    # eval batches go to the step whole, from every process alike: all their rows are read
    eval_batches = split_batches("eval", splits.eval, cfg, seq_len, data_dir, shuffle=False)
    report = {"train_samples": len(splits.train), "eval_samples": len(splits.eval), "truncated": splits.truncated,
              "dropped": splits.dropped, "seq_len": seq_len}
    return TrainingData(tok, train_batches, eval_batches, report, digest, tokenizer_digest,
                        (splits.note,) if splits.note else ())
