"""Stage generate on a corpus far bigger than the one it is compared with: its peak RSS and seconds per GB on a 1 GB
text against a 10 MB one, with data.tokenizer char and bpe (vocab_size 1024).

Each run is dvc.yaml's command (bench.stage_process) as a process of its own, its peak RSS from wait4. The 10 MB text
is one file; the 1 GB one a folder of 10 files of 100 MB, and for char also the same text as one file, whose dataset
id must be the folder's. The text is made up: lines of words drawn from a seeded vocabulary of 20,000 made-up words
(a few with accented letters) at Zipf's frequencies, a blank line now and then. Each figure is one run (the 1 GB bpe
run takes minutes); every text and dataset is deleted once measured. Prints a table; writes nothing.

python benchmarks/corpus.py            # 10 MB against 1 GB: 5 minutes on 2 quiet cores, 3 GB of temp files at most
python benchmarks/corpus.py --short    # 10 MB against 100 MB: about a minute
"""

import argparse
import contextlib
import copy
import io
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from bench import figure, print_table, stage_process  # puts src/ on sys.path

from chunktrain.testing import TINY_TEXT_PARAMS, measured, new_project, project_env, write_params  # noqa: E402

MB = 1_000_000
VOCAB_SIZE = 1024  # data.tokenizer bpe's
RSS_TARGET = 2  # the issue's: peak RSS on the big corpus at most twice that on the small one
LETTERS = list("etaoinshrdlucmfwypvbgkjqxz") + ["é", "è", "à", "ü", "ö", "ß"]


def made_up_text(seed: int, batch_words: int) -> Iterator[str]:
    """Made-up lines without end, in pieces of `batch_words` words: the same for the same arguments."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 11, size=20_000)
    letters = rng.choice(LETTERS, size=lengths.sum(), p=letter_odds()).tolist()
    ends = np.cumsum(lengths).tolist()
    words = ["".join(letters[end - length:end]) for end, length in zip(ends, lengths.tolist())]
    # each word followed by a space, a line end or the end of a paragraph
    forms = [f"{word}{end}" for end in (" ", "\n", ".\n\n") for word in words]
    odds = 1 / np.arange(1, len(words) + 1)
    odds /= odds.sum()
    while True:
        index = rng.choice(len(words), size=batch_words, p=odds) + len(words) * rng.choice(
            3, size=batch_words, p=[0.88, 0.1, 0.02])
        yield "".join([forms[i] for i in index.tolist()])


def letter_odds() -> np.ndarray:
    odds = np.array([12, 9, 8, 7.5, 7, 6.3, 6, 6, 4.2, 4, 2.8, 2.8, 2.4, 2.2, 2, 2, 1.9, 1.5, 1, 0.8, 0.15, 0.15,
                     0.1, 0.1, 0.07, 0.07, 0.3, 0.2, 0.2, 0.2, 0.2, 0.1])
    return odds / odds.sum()


def write_corpus(folder: Path, megabytes: float, files: int, seed: int = 0) -> int:
    """`files` files of `megabytes` / `files` million characters each, ended by a line end, under `folder`
    (part-00.txt, ...); their size in bytes."""
    folder.mkdir(parents=True)
    size, rest = int(megabytes * MB) // files, ""
    pieces = made_up_text(seed, batch_words=min(1 << 20, size // 5 + 1))  # about 6 characters a word
    for index in range(files):
        with open(folder / f"part-{index:02d}.txt", "w", encoding="utf-8", newline="") as file:
            written = 0
            while written < size:
                text = rest or next(pieces)
                cut = text.find("\n", size - written) + 1 or len(text)
                file.write(text[:cut])
                written, rest = written + cut, text[cut:]
    return sum(path.stat().st_size for path in folder.iterdir())


def generate(project, source: str, tokenizer: dict) -> dict:
    """Stage generate on `source` (a file or folder in `project`) with the data.tokenizer `tokenizer`: its seconds,
    peak RSS and dataset id; the dataset is deleted after."""
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["data"] = {**params["data"], "source": source, **tokenizer}
    write_params(project.params_path, params)
    with contextlib.redirect_stdout(io.StringIO()):
        project.plan()
    seconds, peak, output = measured(stage_process("generate"), cwd=project.root, env=project_env(), timeout=3 * 3600)
    dataset_id = json.loads((project.dataset / "dataset.json").read_text())["id"]
    shutil.rmtree(project.dataset)
    print(f"{source}, {tokenizer.get('tokenizer')}: {seconds:.1f} s, {peak / MB:,.0f} MB: {output.strip()}",
          file=sys.stderr, flush=True)
    return {"seconds": seconds, "rss": peak, "id": dataset_id}


def measure(work: Path, small: float, big: float, files: int = 10) -> dict:
    """generate's runs on a text of `small` MB (one file) and of `big` MB (a folder of `files`; for char, also one
    file), char and bpe, each text written just before it is read and deleted after."""
    project = new_project(work / "project", TINY_TEXT_PARAMS, git=False)
    data, runs = project.root / "data", {}
    char, bpe = {"tokenizer": "char"}, {"tokenizer": "bpe", "vocab_size": VOCAB_SIZE}
    sizes = {"small": write_corpus(data / "small", small, 1)}
    for name, tokenizer in (("char", char), ("bpe", bpe)):
        runs[f"{name}, small"] = generate(project, "data/small/part-00.txt", tokenizer)
    shutil.rmtree(data / "small")
    sizes["big"] = write_corpus(data / "big", big, files)
    runs["bpe, big folder"] = generate(project, "data/big", bpe)
    runs["char, big folder"] = generate(project, "data/big", char)
    with open(data / "big.txt", "wb") as whole:
        for part in sorted((data / "big").iterdir()):
            with open(part, "rb") as file:
                shutil.copyfileobj(file, whole)
    shutil.rmtree(data / "big")
    runs["char, big file"] = generate(project, "data/big.txt", char)
    shutil.rmtree(project.root)
    return {"bytes": sizes, "files": files, "runs": runs}


def figures(result: dict) -> list[dict]:
    runs, sizes = result["runs"], result["bytes"]
    small, big = (f"{sizes[size] / MB:,.0f} MB" if sizes[size] < 1e9 else f"{sizes[size] / 1e9:.2f} GB"
                  for size in ("small", "big"))
    same = runs["char, big folder"]["id"] == runs["char, big file"]["id"]
    rows = []
    for run in ("char, big folder", "char, big file", "bpe, big folder"):
        tokenizer, layout = run.split(", ")[0], "one file" if run.endswith("file") else f"{result['files']} files"
        base, ratio = runs[f"{tokenizer}, small"], runs[run]["rss"] / runs[f"{tokenizer}, small"]["rss"]
        rows.append(figure(f"peak RSS of generate, {tokenizer}, {layout}", runs[run]["rss"] / MB, base["rss"] / MB,
                           "MB", f"<= {RSS_TARGET}", ratio <= RSS_TARGET,
                           f"{big} of text as {layout} against {small} as one file; {runs[run]['seconds']:.0f} s and"
                           f" {base['seconds']:.1f} s"))
    for tokenizer in ("char", "bpe"):
        per_gb = {size: runs[f"{tokenizer}, {size}" + (" folder" if size == "big" else "")]["seconds"] * 1e9
                  / sizes[size] for size in ("small", "big")}
        rows.append(figure(f"seconds per GB of generate, {tokenizer}", per_gb["big"], per_gb["small"], "s/GB", "-",
                           True, f"the stage process's wall time per GB of text: {big} as {result['files']} files"
                           f" against {small}" + ("" if tokenizer == "bpe" else "; the same text as one file gives"
                                                  f" the folder's dataset id: {'yes' if same else 'NO'}")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="10 MB against 100 MB instead of 1 GB")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chunktrain-corpus-") as work:
        result = measure(Path(work), 10, 100 if args.short else 1000)
    print_table(figures(result))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
