"""The lexical side of hybrid retrieval: BM25 term weights of product and query text as sparse vectors.

Tokenization, English stopwords and Snowball stemming are those of the Qdrant engine's built-in BM25
model (``qdrant_edge.Bm25``, no download), computed here in the project so the Qdrant Edge and the Qdrant
server backends index and query the very same vectors. A document's value for term t is BM25's
term-frequency part, tf·(k₁+1) / (tf + k₁·(1 − b + b·|d|/avgdl)); a query's value is 1 per distinct
term; the collection's IDF modifier multiplies by idf(t) = ln(1 + (N − n_t + 0.5)/(n_t + 0.5)) at query
time, so the inner product is the BM25 score (Robertson & Zaragoza 2009, "The Probabilistic Relevance
Framework: BM25 and Beyond", §3). avgdl is a setting, not a corpus statistic: a stream has no fixed
corpus, and changing k₁, b or avgdl means re-indexing (a model swap re-embeds everything)."""

from __future__ import annotations

import qdrant_edge as qe

from cartwise.index.base import SparseVector
from cartwise.ranking import RankingProfile
from cartwise.settings import Lexical


class LexicalEncoder:
    """Sparse BM25 vectors for the products collection's LEXICAL vector and for queries, with the k1, b and
    avg_doc_len of ``params`` (the ``Lexical`` settings, or the :class:`RankingProfile` built from them)."""

    def __init__(self, params: Lexical | RankingProfile) -> None:
        self._bm25 = qe.Bm25(qe.Bm25Config(k=params.k1, b=params.b, avg_len=params.avg_doc_len, language="english"))

    def document(self, text: str) -> SparseVector:
        """The product text's term weights (empty for a text of stopwords only)."""
        return _sparse(self._bm25.embed_document(text))

    def documents(self, texts: list[str]) -> list[SparseVector]:
        """:meth:`document` of each text."""
        return [self.document(t) for t in texts]

    def query(self, text: str) -> SparseVector:
        """The query's distinct terms, weight 1 each (empty when only stopwords remain)."""
        return _sparse(self._bm25.embed_query(text))


def _sparse(vector: qe.SparseVector) -> SparseVector:
    return SparseVector(tuple(vector.indices), tuple(vector.values))
