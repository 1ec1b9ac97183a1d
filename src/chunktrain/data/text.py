"""A text as a dataset: its tokenizer (characters, byte-level BPE learnt from the train split, or a tokenizer.json),
and the text's token ids split into train and val."""

import re
from pathlib import Path

import numpy as np

from chunktrain.data.specs import DataParams
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.specs import MAX_VOCAB
from chunktrain.recipe.splits import LANGUAGE_MODEL, read_tokenizer, token_type

MIN_TOKENS = 2  # a window of one token and the next
PIECE, BATCH = 1 << 18, 8  # characters of a piece of text to encode (at least), and pieces encoded at once
LINE_START = re.compile(r"\n(?=\S)")
END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token, which a learnt BPE has too, so an export loads as GPT-2's


def make_tokens(data: DataParams) -> tuple[dict[str, np.ndarray], dict]:
    """The train and val token ids (the last val_fraction of the text's characters is val) and the transform: the
    vocabulary, or the tokenizer. The same text and data params give the same bytes."""
    text = read_text(data.source)
    n_train = int(len(text) * (1 - data.val_fraction))
    for name, size in (("train", n_train), ("val", len(text) - n_train)):
        if size < MIN_TOKENS:
            raise PipelineError(f"data.source: {brief(data.source)} has {len(text)} characters, too few for a"
                                f" {name} split of at least {MIN_TOKENS} (data.val_fraction {data.val_fraction})")
    if data.tokenizer in (None, "char"):
        return character_tokens(text, n_train, data.source)
    tokenizer = learn_bpe(text[:n_train], data.vocab_size) if data.tokenizer == "bpe" else read_tokenizer_file(data)
    dtype = token_type(tokenizer.get_vocab_size(with_added_tokens=True))
    parts = {"train": text[:n_train], "val": text[n_train:]}
    splits = {name: encode(tokenizer, part, dtype) for name, part in parts.items()}
    for name, ids in splits.items():
        if len(ids) < MIN_TOKENS:
            raise PipelineError(f"data.source: {brief(data.source)}'s {name} split is {len(ids)} token(s) with"
                                f" data.tokenizer {brief(data.tokenizer)}, too few (at least {MIN_TOKENS})")
    return splits, {"task": LANGUAGE_MODEL, "tokenizer": tokenizer.to_str()}


def character_tokens(text: str, n_train: int, source: str) -> tuple[dict[str, np.ndarray], dict]:
    """A token per character: the vocabulary is the text's distinct characters, sorted."""
    # Through UTF-32, every character is one uint32, so numpy encodes the whole text in a few vectorized passes.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    points = np.flatnonzero(np.bincount(codes))  # the distinct code points, sorted, in one linear pass
    if len(points) > 2**16:
        raise PipelineError(f"data.source: {brief(source)} has {len(points)} distinct characters; data.tokenizer"
                            f" char takes at most {2**16} (use bpe)")
    dtype = token_type(len(points))
    lookup = np.zeros(int(points[-1]) + 1, dtype=dtype)
    lookup[points] = np.arange(len(points), dtype=dtype)
    tokens = lookup[codes]
    splits = {"train": tokens[:n_train], "val": tokens[n_train:]}
    return splits, {"task": LANGUAGE_MODEL, "vocab": [chr(point) for point in points]}


def encode(tokenizer, text: str, dtype) -> np.ndarray:
    """The token ids of `text`, encoded a batch of pieces at a time, so memory holds a few pieces' encodings (about
    150 bytes a character), not the whole text's (3 GB for 20 MB). A piece ends at a line end before a non-space
    character, where a byte-level tokenizer's pre-tokenizer (GPT-2's, a learnt BPE's) splits anyway, so its ids are
    those of the whole text encoded at once."""
    starts = [0]
    while found := LINE_START.search(text, starts[-1] + PIECE):
        starts.append(found.end())
    ends = [*starts[1:], len(text)]
    ids = [np.zeros(0, dtype=dtype)]
    for first in range(0, len(starts), BATCH):
        pieces = [text[start:end] for start, end in zip(starts[first:first + BATCH], ends[first:first + BATCH])]
        ids += [np.array(piece.ids, dtype=dtype) for piece in tokenizer.encode_batch(pieces, add_special_tokens=False)]
    return np.concatenate(ids)


def learn_bpe(text: str, vocab_size: int):
    """Byte-level BPE (GPT-2's kind) learnt from `text`: up to `vocab_size` tokens, the 256 bytes and <|endoftext|>
    among them, so every text encodes. Deterministic: the same text and size give the same tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
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


def read_text(path: str) -> str:
    """The text as its bytes say: CR and CRLF line ends stay what they are (no universal newlines)."""
    try:
        with open(path, encoding="utf-8", newline="") as file:
            return file.read()
    except UnicodeDecodeError as error:
        raise PipelineError(f"data.source: {brief(path)} is not UTF-8 text (byte {error.start}:"
                            f" {error.reason})") from None
    except OSError as error:
        raise PipelineError(f"data.source: cannot read {brief(path)} ({error.strerror or error})") from None
