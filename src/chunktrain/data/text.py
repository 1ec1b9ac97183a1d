"""A text as a dataset: its tokenizer (characters, byte-level BPE learnt from the train split, or a tokenizer.json),
and the text's token ids split into train and val.

The text is data.source's files one after another, read a piece at a time: a first pass counts its characters (and,
for char, collects them), bpe learns from the train split in a second, and the last encodes each split as
write_dataset writes it. Memory holds a few pieces, never the whole text, so generate takes about as much of it for
a corpus of gigabytes as for one of megabytes.
"""

import codecs
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from chunktrain.data.specs import DataParams
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.specs import MAX_VOCAB
from chunktrain.recipe.splits import LANGUAGE_MODEL, read_tokenizer, token_type

MIN_TOKENS = 2  # a window of one token and the next
READ = 1 << 20  # bytes read from a file at a time
PIECE, BATCH = 1 << 18, 8  # characters of a piece of text to encode (at least), and pieces encoded at once
LINE_START = re.compile(r"\n(?=\S)")
END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token, which a learnt BPE has too, so an export loads as GPT-2's
CODE_POINTS = 0x110000  # Unicode's


def make_tokens(data: DataParams, files: list[Path]) -> tuple[dict[str, Iterator[np.ndarray]], dict]:
    """The train and val token ids (the last val_fraction of the text's characters is val), each an iterator of
    arrays encoded as it is read, and the transform: the vocabulary, or the tokenizer. The text is `files` one after
    another (data.source_files). The same text and data params give the same bytes. Every check runs before the first
    id but one: a split that bpe or a tokenizer.json encodes to too few tokens stops its iterator at its end."""
    if data.tokenizer in (None, "char"):
        n_chars, points = scan_characters(files)
        n_train = split_point(data, n_chars)
        return character_tokens(files, n_train, points, data.source)
    n_chars = sum(len(piece) for piece in read_text(files))
    n_train = split_point(data, n_chars)
    tokenizer = (learn_bpe(part(read_text(files), 0, n_train), data.vocab_size) if data.tokenizer == "bpe"
                 else read_tokenizer_file(data))
    dtype = token_type(tokenizer.get_vocab_size(with_added_tokens=True))
    bounds = {"train": (0, n_train), "val": (n_train, None)}
    splits = {name: at_least_two(encode(tokenizer, part(read_text(files), *bound), dtype), name, data)
              for name, bound in bounds.items()}
    return splits, {"task": LANGUAGE_MODEL, "tokenizer": tokenizer.to_str()}


def split_point(data: DataParams, n_chars: int) -> int:
    """The characters of the train split, the first of the text's `n_chars`; too few in a split is one line."""
    n_train = int(n_chars * (1 - data.val_fraction))
    for name, size in (("train", n_train), ("val", n_chars - n_train)):
        if size < MIN_TOKENS:
            raise PipelineError(f"data.source: {brief(data.source)} has {n_chars} characters, too few for a"
                                f" {name} split of at least {MIN_TOKENS} (data.val_fraction {data.val_fraction})")
    return n_train


def scan_characters(files: list[Path]) -> tuple[int, np.ndarray]:
    """The text's number of characters, and its distinct code points, sorted."""
    seen, n_chars = np.zeros(CODE_POINTS, dtype=bool), 0
    for piece in read_text(files):
        seen[code_points(piece)] = True
        n_chars += len(piece)
    return n_chars, np.flatnonzero(seen)


def code_points(text: str) -> np.ndarray:
    """The text's characters as uint32 code points: through UTF-32, numpy takes a piece in a few vectorized passes."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def character_tokens(files: list[Path], n_train: int, points: np.ndarray,
                     source: str) -> tuple[dict[str, Iterator[np.ndarray]], dict]:
    """A token per character: the vocabulary is the text's distinct characters (`points`), sorted."""
    if len(points) > 2**16:
        raise PipelineError(f"data.source: {brief(source)} has {len(points)} distinct characters; data.tokenizer"
                            f" char takes at most {2**16} (use bpe)")
    dtype = token_type(len(points))
    lookup = np.zeros(int(points[-1]) + 1, dtype=dtype)
    lookup[points] = np.arange(len(points), dtype=dtype)
    splits = {name: (lookup[code_points(piece)] for piece in part(read_text(files), *bound))
              for name, bound in (("train", (0, n_train)), ("val", (n_train, None)))}
    return splits, {"task": LANGUAGE_MODEL, "vocab": [chr(point) for point in points]}


def encode(tokenizer, pieces: Iterable[str], dtype) -> Iterator[np.ndarray]:
    """The token ids of the text that `pieces` make, encoded a batch of line_pieces at a time, so memory holds a few
    pieces' encodings (about 150 bytes a character), not the whole text's (3 GB for 20 MB). Cut where a line starts,
    pieces encode to the ids of the whole text encoded at once."""
    lines = line_pieces(pieces, PIECE)
    while batch := [piece for _, piece in zip(range(BATCH), lines)]:
        for encoding in tokenizer.encode_batch_fast(batch, add_special_tokens=False):
            yield np.array(encoding.ids, dtype=dtype)


def line_pieces(pieces: Iterable[str], size: int) -> Iterator[str]:
    """The text that `pieces` make, cut again after at least `size` characters, before a line end that a non-space
    character follows (LINE_START), so that the next piece starts with it. A byte-level tokenizer's pre-tokenizer
    (GPT-2's, a learnt BPE's) splits there anyway, and the end of the piece before splits as it would: a run of
    spaces and line ends before a line's first character is one word but for its last character, which the next
    piece starts with (a cut after the run would make it one word, which a tokenizer may merge otherwise). A text
    without such a line end for megabytes is held until one comes."""
    rest, search_from = "", size
    for piece in pieces:
        rest += piece
        while found := LINE_START.search(rest, search_from):
            yield rest[:found.start()]
            rest, search_from = rest[found.start():], size
        search_from = max(size, len(rest) - 1)  # a line end that the next piece may show to start a line
    if rest:
        yield rest


def at_least_two(ids: Iterator[np.ndarray], name: str, data: DataParams) -> Iterator[np.ndarray]:
    """`ids`, a split's token ids; fewer than MIN_TOKENS in all is one line, at their end."""
    count = 0
    for piece in ids:
        count += len(piece)
        yield piece
    if count < MIN_TOKENS:
        raise PipelineError(f"data.source: {brief(data.source)}'s {name} split is {count} token(s) with"
                            f" data.tokenizer {brief(data.tokenizer)}, too few (at least {MIN_TOKENS})")


def learn_bpe(pieces: Iterable[str], vocab_size: int):
    """Byte-level BPE (GPT-2's kind) learnt from the text that `pieces` make: up to `vocab_size` tokens, the 256
    bytes and <|endoftext|> among them, so every text encodes. Deterministic: the same text and size give the same
    tokenizer.json, however `pieces` cut it (the trainer sees line_pieces, cut where its pre-tokenizer splits)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(line_pieces(pieces, PIECE), trainer)
    return tokenizer


def read_tokenizer_file(data: DataParams):
    """The tokenizer of data.tokenizer's tokenizer.json; a file that is not one, or too large a vocabulary, is one
    line."""
    path = Path(data.tokenizer_file)
    try:
        tokenizer = read_tokenizer(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PipelineError(f"data.tokenizer: cannot read {brief(data.tokenizer)} ({error})") from None
    if (size := tokenizer.get_vocab_size(with_added_tokens=True)) > MAX_VOCAB:
        raise PipelineError(f"data.tokenizer: {brief(data.tokenizer)} has {size:,} tokens; at most {MAX_VOCAB:,}")
    return tokenizer


def read_text(files: list[Path]) -> Iterator[str]:
    """The text of `files`, one after another, as their bytes say (UTF-8; CR and CRLF line ends stay what they are),
    in pieces of at most READ bytes' characters; a file that is not UTF-8 is one line naming it and the byte."""
    for path in files:
        decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0  # offset: the bytes read before `chunk`
        try:
            with open(path, "rb") as file:
                while chunk := file.read(READ):
                    held = len(decoder.getstate()[0])  # the start of a character that the last chunk cut
                    yield decoder.decode(chunk)
                    offset += len(chunk)
                held = len(decoder.getstate()[0])
                decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise PipelineError(f"data.source: {brief(str(path))} is not UTF-8 text (byte {offset - held + error.start}:"
                                f" {error.reason})") from None
        except OSError as error:
            raise PipelineError(f"data.source: cannot read {brief(str(path))} ({error.strerror or error})") from None


def part(pieces: Iterable[str], start: int, stop: int | None) -> Iterator[str]:
    """Characters start..stop (None: to the end) of the text that `pieces` make, in pieces; reads no further."""
    position = 0
    for piece in pieces:
        if position + len(piece) > start:
            yield piece[max(start - position, 0):None if stop is None else max(stop - position, 0)]
        position += len(piece)
        if stop is not None and position >= stop:
            return
