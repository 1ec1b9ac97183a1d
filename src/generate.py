"""Stage `generate`: data.source -> the dataset folder: its splits, and dataset.json (their transform and id)."""

import argparse
from pathlib import Path

import numpy as np

from chunktrain.data.specs import DataSpec
from chunktrain.recipe.errors import run_stage
from chunktrain.data.dataset import make_splits, parquet_bytes, write_dataset
from chunktrain.data.text import make_tokens
from chunktrain.recipe.splits import token_type, vocab_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="data/plan/data.json")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder: a table's train, val and test .parquet, or a text's train and val .bin token"
                             " files, and dataset.json (the transform, vocabulary or tokenizer, and the dataset's"
                             " id)")
    args = parser.parse_args(argv)
    spec = DataSpec.read(args.spec)
    sources = spec.data.source_files(Path("."))  # the repo's root, where DVC runs stages
    # every check before any write (but a split that a tokenizer encodes to too few tokens: see make_tokens)
    if spec.data.is_text:
        tokens, transform = make_tokens(spec.data, sources)
        files = {f"{split}.bin": (ids.tobytes() for ids in pieces) for split, pieces in tokens.items()}
        dataset_id = write_dataset(files, transform, args.out)  # encodes the text as it writes
        item = np.dtype(token_type(vocab_size(transform))).itemsize
        sizes = {split: f"{(args.out / f'{split}.bin').stat().st_size // item:,} tokens" for split in tokens}
        summary = (f"{len(transform['vocab'])} characters in the vocabulary" if "vocab" in transform
                   else f"{vocab_size(transform):,} tokens in the vocabulary ({spec.data.tokenizer})")
        if spec.data.is_folder:
            summary += f"; the text of {len(sources)} .txt file{'s' if len(sources) > 1 else ''}"
    else:
        frames, transform = make_splits(spec.data, spec.task, spec.seed)
        files = {f"{split}.parquet": [parquet_bytes(frame)] for split, frame in frames.items()}
        dataset_id = write_dataset(files, transform, args.out)
        sizes = {split: f"{len(frame)} rows" for split, frame in frames.items()}
        classes = f", {len(transform['labels'])} classes" if transform["labels"] else ""
        summary = f"{len(transform['features'])} features{classes}"
    print(f"generate: {args.out}: " + ", ".join(f"{split} {size}" for split, size in sizes.items())
          + f"; {summary}; id {dataset_id[:12]}")


if __name__ == "__main__":
    run_stage(main)
