"""A text as a dataset: a character vocabulary, and the text's token ids split into train and val."""


import numpy as np

from chunktrain.data.specs import DataParams
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.splits import LANGUAGE_MODEL, TOKEN

MIN_TOKENS = 2  # a window of one token and the next


def make_tokens(data: DataParams) -> tuple[dict[str, np.ndarray], dict]:
    """The train and val token ids (the last val_fraction of the text is val) and the transform: the vocabulary."""
    text = read_text(data.source)
    # Through UTF-32, every character is one uint32, so numpy encodes the whole text in a few vectorized passes.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n_train = int(len(codes) * (1 - data.val_fraction))
    for name, size in (("train", n_train), ("val", len(codes) - n_train)):
        if size < MIN_TOKENS:
            raise PipelineError(f"data.source: {brief(data.source)} has {len(codes)} characters, too few for a"
                                f" {name} split of at least {MIN_TOKENS} (data.val_fraction {data.val_fraction})")
    points = np.flatnonzero(np.bincount(codes))  # the distinct code points, sorted, in one linear pass
    if len(points) > np.iinfo(TOKEN).max + 1:
        raise PipelineError(f"data.source: {brief(data.source)} has {len(points)} distinct characters; a token file"
                            f" holds at most {np.iinfo(TOKEN).max + 1}")
    lookup = np.zeros(int(points[-1]) + 1, dtype=TOKEN)
    lookup[points] = np.arange(len(points), dtype=TOKEN)
    tokens = lookup[codes]
    splits = {"train": tokens[:n_train], "val": tokens[n_train:]}
    return splits, {"task": LANGUAGE_MODEL, "vocab": [chr(point) for point in points]}


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
