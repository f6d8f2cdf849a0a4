"""BM25 scores of queries against a fixed catalog, as the served index computes them, for scoring the
hybrid ranking during training without an index (docs/architecture.md, "Hybrid retrieval").

The catalog's sparse vectors (cartwise.lexical) become a CSR matrix with the engine's IDF folded in,
idf(t) = ln(1 + (N − n_t + 0.5)/(n_t + 0.5)) over the whole catalog (as the served collection counts
it); a query's BM25 against products is then one sparse product."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from cartwise.index import SparseVector
from cartwise.lexical import LexicalEncoder
from cartwise.settings import Lexical


class LexicalScores:
    """BM25 of any query against the catalog's products (by catalog index); ``params`` also carries the
    fusion's w and κ for whoever fuses these scores with the dense ones."""

    def __init__(self, lexical: Lexical, product_texts: list[str]) -> None:
        self.params, self.encoder = lexical, LexicalEncoder(lexical)
        docs = self.encoder.documents(product_texts)
        self._column: dict[int, int] = {}
        self._docs = self._matrix(docs, grow=True)
        df = np.bincount(self._docs.indices, minlength=len(self._column))
        idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5)).astype(np.float32)
        self._docs = (self._docs @ sparse.diags(idf)).T.tocsr()  # (terms, products), IDF folded in

    def _matrix(self, vectors: list[SparseVector], grow: bool = False) -> sparse.csr_matrix:
        rows, cols, vals = [], [], []
        for row, vector in enumerate(vectors):
            for term, value in zip(vector.indices, vector.values):
                col = self._column.setdefault(term, len(self._column)) if grow else self._column.get(term)
                if col is not None:  # a query term no product has scores nothing
                    rows.append(row), cols.append(col), vals.append(value)
        return sparse.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                                 shape=(len(vectors), len(self._column)))

    def scores(self, queries: list[str], products: np.ndarray) -> np.ndarray:
        """(Q, len(products)) float32 BM25 scores of ``queries`` against catalog indices ``products``."""
        matrix = self._matrix([self.encoder.query(q) for q in queries])
        return np.asarray((matrix @ self._docs[:, products]).todense(), dtype=np.float32)
