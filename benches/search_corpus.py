"""Corpus, queries and vectors of the search benchmark (``bench_search.py``).

Text: every docstring (module, class, function; ``ast.get_docstring``) and every block of
full-line comments (consecutive ``#`` lines, joined with newlines) of the running Python's
standard library (``sysconfig.get_paths()["stdlib"]``, without ``test``/``tests``/``idle_test``
directories and ``site-packages``), deduplicated, empties dropped: ~19k documents on CPython
3.11. Real prose and code fragments, so the term statistics are those of real text. Then, up
to ``n``, generated documents: a seeded bigram (Markov) walk over the whitespace-separated
words of the real documents, restarting from a word drawn by frequency now and then, with
lengths drawn from the real documents' lengths. The vocabulary, the word frequencies and the
document lengths therefore follow the real corpus. Each document gets one of 8 ``channel``
values, seeded.

Both the extracted standard library text (per Python version) and the whole corpus (per
Python version, ``n`` and ``seed``) are cached as JSON in ``bench-results/search-corpus/``
(git-ignored), so only the first run pays for the extraction (~20-25 s) and the generation.

Queries: two distinct tokens of one real (or generated) document, see :func:`queries`.

Vectors: a seeded mixture of Gaussian clusters around random unit centres, normalized to unit
length, so the nearest neighbours of a query are few and well defined (ANN recall means
something), see :func:`vectors`.

``python benches/search_corpus.py [--n N] [--seed S]`` builds (or loads) the corpus and prints
its size and a few statistics.
"""

from __future__ import annotations

import argparse
import ast
import io
import itertools
import json
import random
import re
import sys
import sysconfig
import time
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, log

CACHE = RESULTS / "search-corpus"
# Bump when the extraction or the generator changes, so stale caches are not reused.
VERSION = 1
CHANNELS = ["general", "random", "dev", "ops", "support", "sales", "design", "news"]
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
# Vector mixture: this many cluster centres whatever ``n`` is.
CLUSTERS = 256
# Per-coordinate noise around a centre, times 1/sqrt(dim): a point is ~0.7 cosine from its
# centre, two points of one cluster ~0.5 from each other, points of different clusters ~0.
NOISE = 1.0

_TOKEN = re.compile(r"[^\W_]+")


def _python_key() -> str:
    return f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


# -- the standard library's text --------------------------------------------------------------


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files, sorted, without test directories."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return sorted(
        p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])
    )


def _docstrings(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def _comment_blocks(source: bytes) -> Iterator[str]:
    """Blocks of consecutive full-line comments, ``#`` and surrounding spaces stripped."""
    block: list[str] = []
    last = -2
    for tok in tokenize.tokenize(io.BytesIO(source).readline):
        if tok.type != tokenize.COMMENT or not tok.line.lstrip().startswith("#"):
            continue
        line = tok.start[0]
        if line != last + 1 and block:
            yield "\n".join(block)
            block = []
        block.append(tok.string.lstrip("#").strip())
        last = line
    if block:
        yield "\n".join(block)


def extract_stdlib() -> list[str]:
    """Every docstring and comment block of the standard library, deduplicated, in file order."""
    seen: set[str] = set()
    out: list[str] = []
    for path in stdlib_files():
        try:
            source = path.read_bytes()
            texts = list(_docstrings(ast.parse(source)))
            texts.extend(_comment_blocks(source))
        except (SyntaxError, ValueError, UnicodeDecodeError, tokenize.TokenError, OSError):
            continue  # a few files are deliberately broken (lib2to3 data, bad encodings)
        for text in texts:
            text = text.strip()
            if text and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def stdlib_texts() -> list[str]:
    """:func:`extract_stdlib`, cached per Python version."""
    path = CACHE / f"stdlib-{_python_key()}-v{VERSION}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    texts = extract_stdlib()
    log(
        f"  search corpus: {len(texts):,} docstrings and comment blocks from the standard "
        f"library in {time.perf_counter() - t0:.1f} s"
    )
    _write_json(path, texts)
    return texts


# -- generated text ---------------------------------------------------------------------------


class WordModel:
    """A bigram model over the whitespace-separated words of the real documents."""

    def __init__(self, texts: list[str]) -> None:
        self.words: list[str] = []  # every word occurrence: choice() draws by frequency
        self.next: dict[str, list[str]] = {}  # word -> every word that followed it
        self.lengths: list[int] = []  # words per real document
        for text in texts:
            words = text.split()
            if not words:
                continue
            self.lengths.append(len(words))
            self.words.extend(words)
            for a, b in itertools.pairwise(words):
                self.next.setdefault(a, []).append(b)

    def document(self, rng: random.Random, restart: float = 0.15) -> str:
        """One generated document: a bigram walk of a real document's length."""
        length = rng.choice(self.lengths)
        word = rng.choice(self.words)
        out = [word]
        for _ in range(length - 1):
            followers = self.next.get(word)
            if followers is None or rng.random() < restart:
                word = rng.choice(self.words)
            else:
                word = rng.choice(followers)
            out.append(word)
        return " ".join(out)


def build_corpus(n: int = 100_000, seed: int = 0) -> list[dict[str, str]]:
    """``n`` documents ``{"body": str, "channel": str}``: the standard library's, then generated.

    With ``n`` below the number of real documents, a seeded sample of them (in file order).
    Cached per Python version, ``n`` and ``seed`` in ``bench-results/search-corpus/``.
    """
    path = CACHE / f"corpus-{_python_key()}-n{n}-s{seed}-v{VERSION}.json"
    if path.exists():
        return json.loads(path.read_text())
    real = stdlib_texts()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    if n <= len(real):
        bodies = [real[i] for i in sorted(rng.sample(range(len(real)), n))]
    else:
        model = WordModel(real)
        bodies = list(real)
        bodies.extend(model.document(rng) for _ in range(n - len(real)))
    corpus = [{"body": body, "channel": rng.choice(CHANNELS)} for body in bodies]
    log(
        f"  search corpus: {n:,} documents ({min(n, len(real)):,} real) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    _write_json(path, corpus)
    return corpus


def real_count() -> int:
    """How many documents the standard library gives (the rest of a corpus is generated)."""
    return len(stdlib_texts())


# -- queries ----------------------------------------------------------------------------------


def tokenize_text(text: str) -> list[str]:
    """Split on non-alphanumerics and lowercase (as tantivy's default and FTS5's unicode61)."""
    return _TOKEN.findall(text.lower())


def queries(corpus: list[dict[str, str]], count: int, seed: int = 1) -> list[str]:
    """``count`` two-term queries ``"t1 t2"``: 2 distinct tokens of one random document.

    Tokens are ASCII, 3 to 40 characters long (tantivy's default tokenizer drops tokens longer
    than 40 bytes; ASCII keeps every engine's tokenizer in agreement), so each term occurs in
    at least the document it came from, in every index.
    """
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        doc = corpus[rng.randrange(len(corpus))]
        tokens = sorted(
            {t for t in tokenize_text(doc["body"]) if 3 <= len(t) <= 40 and t.isascii()}
        )
        if len(tokens) >= 2:
            out.append(" ".join(rng.sample(tokens, 2)))
    return out


# -- vectors ----------------------------------------------------------------------------------


def _mixture(count: int, dim: int, seed: int, stream: int) -> Any:
    import numpy as np

    centres = np.random.default_rng([seed, 0]).standard_normal((CLUSTERS, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, stream])
    out = np.empty((count, dim), dtype=np.float32)
    chunk = 16_384
    for start in range(0, count, chunk):
        m = min(chunk, count - start)
        points = centres[rng.integers(0, CLUSTERS, m)]
        points += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(NOISE / dim**0.5)
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        out[start : start + m] = points
    return out


def vectors(n: int = 100_000, dim: int = 384, seed: int = 0) -> Any:
    """``n`` unit vectors (float32, ``n x dim``) from a mixture of ``CLUSTERS`` Gaussians."""
    return _mixture(n, dim, seed, 1)


def vector_queries(count: int, dim: int = 384, seed: int = 0) -> Any:
    """``count`` query vectors from the same mixture as ``vectors(..., seed=seed)`` (new draws)."""
    return _mixture(count, dim, seed, 2)


# -- helpers ----------------------------------------------------------------------------------


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def describe(corpus: list[dict[str, str]]) -> str:
    """Size, lengths and vocabulary of a corpus, in one line."""
    lengths = sorted(len(d["body"]) for d in corpus)
    vocab: dict[str, int] = {}
    total = 0
    for d in corpus:
        for t in tokenize_text(d["body"]):
            vocab[t] = vocab.get(t, 0) + 1
            total += 1
    singletons = sum(1 for c in vocab.values() if c == 1)
    p50 = lengths[len(lengths) // 2]
    p99 = lengths[min(len(lengths) - 1, len(lengths) * 99 // 100)]
    return (
        f"{len(corpus):,} documents, {sum(lengths) / 1e6:.1f} MB of text, body length p50 "
        f"{p50} p99 {p99} chars; {total:,} tokens, {len(vocab):,} distinct "
        f"({singletons:,} occurring once)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = build_corpus(args.n, args.seed)
    print(f"standard library ({_python_key()}): {real_count():,} documents")
    print(f"corpus: {describe(corpus)}")
    for q in queries(corpus, 5, args.seed):
        print(f"  query: {q!r}")


if __name__ == "__main__":
    main()
