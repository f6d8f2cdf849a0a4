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
        self._idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5)).astype(np.float32)
        self._has_term = (self._docs > 0).astype(np.float32).tocsr()  # (products, terms), 1 where present
        self._docs = (self._docs @ sparse.diags(self._idf)).T.tocsr()  # (terms, products), IDF folded in

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

    def term_coverage(self, query: str, products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((C,), (C,)) float32 for catalog indices ``products`` (C,): the share of the query's terms
        (as BM25 sees them: stemmed, no stopwords) each product contains, and that share weighted by IDF
        (over the query terms some product has). Both 0 for a query with no terms."""
        vector = self.encoder.query(query)
        known = (self._matrix([vector]) > 0).astype(np.float32)  # (1, terms)
        has = self._has_term[products]  # (C, terms)
        plain = np.asarray((has @ known.T).todense()).ravel() / max(len(vector.indices), 1)
        idf = known.multiply(self._idf)
        weighted = np.asarray((has @ idf.T).todense()).ravel() / max(float(idf.sum()), 1e-6)
        return plain.astype(np.float32), weighted.astype(np.float32)

    def document_terms(self, products: np.ndarray) -> np.ndarray:
        """Distinct indexed terms of each catalog index in ``products``, float32, same shape."""
        return np.diff(self._has_term.indptr)[products].astype(np.float32)
