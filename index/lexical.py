"""The lexical index of one index version: BM25 over a text column, Ray-free, numpy only.

Dense vectors miss what only the words carry (product names, error codes, version numbers); BM25
over the same rows finds them. Built by `jobs.build_index` from the stored text column into
`lexical.npz` beside index.faiss (LEXICAL_FILE), recorded in manifest.json (size and sha256 like
every file of a version), so it is published, fetched into the node-local cache and verified by
index/store.py like the rest, and hot-swapped with its version.

Why our own ~150 lines rather than bm25s or tantivy: the tokenizer must keep codes whole and
split CJK runs (neither library's default does both), scoring arbitrary rows (the dense
candidates) must be cheap, and the file must be one plain array file the version's manifest
verifies. bench/lexical.py measures it against bm25s.

Storage: BM25 is precomputed per (term, row) ("eager" scoring, as bm25s does): a query's scores
are the sum of its terms' posting weights, one numpy scatter-add per term into a dense float32
row vector (4 bytes a row per query: 4 MB at 1M rows).

Tokenizer (TOKENIZER = "qm-1"): NFKC, lowercase, no stemming. A code-like token (word pieces
joined by - _ . : / + #, e.g. `E-1042`, `v2.3.1`, `SKU_88`) is kept whole and also split into its
pieces (`e-1042`, `e`, `1042`), so a query naming the code matches it exactly and one naming a
piece still matches. A CJK run (Han, kana, Hangul) gives its character unigrams and bigrams
(CJK has no spaces; bigrams are the standard no-dictionary choice, as Lucene's CJKAnalyzer).
"""

from __future__ import annotations

import io
import re
import time
import unicodedata
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from index.errors import IndexInvalid

LEXICAL_FILE = "lexical.npz"
TOKENIZER = "qm-1"
# BM25 parameters (Lucene's defaults; Robertson's usual range is k1 1.2-2.0, b 0.75).
K1 = 1.2
B = 0.75

_CJK = "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_JOIN = r"[-_.:/+#]"
_WORD = rf"[^\W_{_CJK}]+"
_TOKEN = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>{_WORD}(?:{_JOIN}{_WORD})*)")
_PIECE = re.compile(_WORD)


def tokenize(text: str) -> list[str]:
    """Terms of one text (see the module docstring); repeated terms repeat (they are term frequencies)."""
    return _terms(unicodedata.normalize("NFKC", text).lower())


def _terms(lowered: str) -> list[str]:
    """tokenize() after NFKC and lowercasing."""
    out: list[str] = []
    for m in _TOKEN.finditer(lowered):
        cjk = m.group("cjk")
        if cjk is not None:
            out.extend(cjk)
            out.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
            continue
        word = m.group("word")
        pieces = _PIECE.findall(word)
        if len(pieces) > 1:
            out.append(word)  # the code whole: `e-1042` matches only E-1042, not E-1043
        out.extend(pieces)
    return out


def _chunk_codes(texts: Iterable[str | None]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(per text its whitespace chunks' count, every chunk's code, the distinct chunks) of normalised texts.

    Why chunks: no term crosses whitespace (the token pattern never matches it), so a text's
    terms are its chunks' terms in order, and a corpus of a million questions has only some
    hundred thousand distinct chunks: the regex tokenizer runs once per distinct chunk, not per
    word of every row. What is left per row is C-level str work and one dict lookup per chunk.
    """
    ids: dict[str, int] = {}
    codes = array("q")  # 8 bytes a chunk, not a Python int object each (~10 chunks a question)
    counts = array("q")
    for text in texts:
        if not isinstance(text, str):
            counts.append(0)
            continue
        chunks = unicodedata.normalize("NFKC", text).lower().split()
        counts.append(len(chunks))
        codes.extend([ids.setdefault(c, len(ids)) for c in chunks])
    return np.frombuffer(counts, dtype=np.int64), np.frombuffer(codes, dtype=np.int64), list(ids)


def _expand(starts: np.ndarray, lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[starts[i] : starts[i] + lengths[i]] for every i, concatenated (no Python loop)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=values.dtype)
    ends = np.cumsum(lengths)
    within = np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)
    return values[np.repeat(starts, lengths) + within]


@dataclass
class LexicalIndex:
    """BM25 postings: term i's rows are rows[offsets[i]:offsets[i+1]] with their precomputed weights."""

    terms: dict[str, int]
    offsets: np.ndarray  # int64, len(terms) + 1
    rows: np.ndarray  # int32 row ids (= FAISS ids)
    weights: np.ndarray  # float32 BM25 contribution of the term to the row
    count: int  # rows in the version

    @classmethod
    def build(cls, texts: Iterable[str | None], k1: float = K1, b: float = B) -> LexicalIndex:
        """BM25 over `texts` (row i = text i; None or empty: a row no query matches)."""
        counts, codes, chunks = _chunk_codes(texts)
        vocab: dict[str, int] = {}
        chunk_terms = [[vocab.setdefault(t, len(vocab)) for t in _terms(c)] for c in chunks]
        chunk_len = np.fromiter(map(len, chunk_terms), np.int64, len(chunk_terms))
        chunk_start = np.cumsum(chunk_len) - chunk_len  # where each chunk's terms begin in terms_flat
        terms_flat = np.fromiter((t for ts in chunk_terms for t in ts), np.int64, int(chunk_len.sum()))
        n = len(counts)
        per_chunk = chunk_len[codes]  # terms of every chunk occurrence
        flat = _expand(chunk_start[codes], per_chunk, terms_flat)  # every row's terms, rows in order
        doc_of = np.repeat(np.repeat(np.arange(n, dtype=np.int64), counts), per_chunk)
        dl = np.bincount(doc_of, minlength=n).astype(np.float64)
        avgdl = float(dl.mean()) if n and dl.sum() else 1.0
        # (term, row) pairs with their term frequency: one sort, no Python loop over postings.
        pair = np.unique(flat * max(n, 1) + doc_of, return_counts=True)
        keys, tf = pair[0], pair[1].astype(np.float64)
        term, row = keys // max(n, 1), keys % max(n, 1)
        df = np.bincount(term, minlength=len(vocab)).astype(np.float64)
        idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))  # Lucene's non-negative idf
        norm = k1 * (1.0 - b + b * dl[row] / avgdl)
        weights = (idf[term] * tf * (k1 + 1.0) / (tf + norm)).astype(np.float32)
        offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df.astype(np.int64), out=offsets[1:])
        return cls(vocab, offsets, row.astype(np.int32), weights, n)

    @property
    def nbytes(self) -> int:
        """Resident bytes: the postings arrays plus an estimate of the term dictionary (~80 B a term)."""
        return int(self.offsets.nbytes + self.rows.nbytes + self.weights.nbytes + 80 * len(self.terms))

    def scores(self, text: str) -> np.ndarray:
        """BM25 of `text` against every row (float32, 0 where no term matches)."""
        out = np.zeros(self.count, dtype=np.float32)
        for term in tokenize(text):
            i = self.terms.get(term)
            if i is not None:
                lo, hi = self.offsets[i], self.offsets[i + 1]
                out[self.rows[lo:hi]] += self.weights[lo:hi]  # rows of one term are distinct
        return out

    def save(self, path: str | Path) -> int:
        """Write the one file (terms as newline-joined UTF-8: tokens never hold a newline); its size."""
        order = sorted(self.terms, key=self.terms.__getitem__)
        blob = "\n".join(order).encode("utf-8")
        buf = io.BytesIO()
        np.savez(
            buf,
            terms=np.frombuffer(blob, dtype=np.uint8),
            offsets=self.offsets,
            rows=self.rows,
            weights=self.weights,
            count=np.asarray([self.count], dtype=np.int64),
        )
        Path(path).write_bytes(buf.getvalue())
        return len(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, count: int) -> LexicalIndex:
        """Read lexical.npz; IndexInvalid if it is unreadable or does not fit a version of `count` rows."""
        try:
            with np.load(path, allow_pickle=False) as data:
                blob = data["terms"].tobytes().decode("utf-8")
                offsets, rows, weights = data["offsets"], data["rows"], data["weights"]
                stored = int(data["count"][0])
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise IndexInvalid(f"{path}: lexical index unreadable: {exc}") from exc
        terms = blob.split("\n") if blob else []
        ok = (
            stored == count
            and len(offsets) == len(terms) + 1
            and int(offsets[-1]) == len(rows) == len(weights)
            and (len(rows) == 0 or (int(rows.min()) >= 0 and int(rows.max()) < count))
        )
        if not ok:
            raise IndexInvalid(f"{path}: lexical index does not fit this version ({count} rows)")
        return cls({t: i for i, t in enumerate(terms)}, offsets, rows, weights, count)


def top_rows(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The best min(k, matching) rows by score (only rows with a score > 0, within `mask`), best first."""
    s = scores if mask is None else np.where(mask, scores, 0.0)
    hit = np.flatnonzero(s > 0)
    if len(hit) > k:
        hit = hit[np.argpartition(-s[hit], k - 1)[:k]]
    order = np.lexsort((hit, -s[hit]))  # ties: lower row first, deterministic
    return hit[order].astype(np.int64), s[hit[order]].astype(np.float32)


def texts_column(values: Sequence[object]) -> list[str | None]:
    """A metadata column as texts (non-strings become None: rows no query matches)."""
    return [v if isinstance(v, str) else None for v in values]


def write_lexical(staged: Path, metadata_file: str, column: str) -> dict[str, object]:
    """Build lexical.npz in a staged version from its metadata column; the manifest's `lexical` record."""
    started = time.perf_counter()
    names = pq.read_schema(staged / metadata_file).names
    if column not in names:
        raise IndexInvalid(
            f"lexical index: no text column {column!r} in the metadata (columns: {', '.join(names)}); "
            "pass --lexical-column, or --no-lexical"
        )
    values = pq.read_table(staged / metadata_file, columns=[column]).column(column).to_pylist()
    index = LexicalIndex.build(texts_column(values))
    index.save(staged / LEXICAL_FILE)
    return {
        "column": column,
        "tokenizer": TOKENIZER,
        "k1": K1,
        "b": B,
        "terms": len(index.terms),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
