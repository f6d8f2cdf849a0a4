"""Training examples: labelled queries split by query into train and validation.

A :class:`LabeledQuery` is one query with its judged products (product index -> grade). Home Depot
grades are means of 1..3; behavior stages use purchase 4 > cart 3 > view 2 (see trainer.behavior).
The split hashes the query text, so a query is in the same split in every run, on every machine,
and the held-back evaluation queries (not in our files) are never trained on either."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

VAL_FRACTION = 0.2
SPLIT_SALT = "cartwise-split-v1"


def split_of(query: str, val_fraction: float = VAL_FRACTION) -> str:
    """"val" for a stable pseudo-random ``val_fraction`` of query texts, else "train"."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{query.strip().lower()}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def tuning_half(query: str) -> str:
    """"tune" or "check" for a validation query, by a second hash independent of :func:`split_of`: serving
    parameters are chosen on the tune half and confirmed on the check half."""
    digest = hashlib.sha256(f"cartwise-tuning-half:{query.strip().lower()}".encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "check"


@dataclass(frozen=True)
class LabeledQuery:
    """A query text and its judged products: index into the catalog -> grade (higher is better)."""

    text: str
    judged: dict[int, float] = field(default_factory=dict)

    def positives(self, min_grade: float) -> list[int]:
        """Judged products graded at least ``min_grade``, best first."""
        return sorted((p for p, g in self.judged.items() if g >= min_grade), key=lambda p: -self.judged[p])

    def graded_at_least(self, min_grade: float) -> "LabeledQuery":
        """This query with only the products judged at least ``min_grade``."""
        return LabeledQuery(self.text, {p: g for p, g in self.judged.items() if g >= min_grade})

    def excluded(self, min_grade: float) -> set[int]:
        """Products that must never be used as negatives: judged at least ``min_grade``."""
        return {p for p, g in self.judged.items() if g >= min_grade}


def labeled_queries(qrels: dict[str, dict[str, float]], product_index: dict[str, int]) -> list[LabeledQuery]:
    """Qrels (query -> {product id: grade}) as labelled queries over catalog indices (unknown ids dropped)."""
    return [LabeledQuery(q, {product_index[p]: g for p, g in judged.items() if p in product_index})
            for q, judged in qrels.items()]


def split_queries(queries: list[LabeledQuery], val_fraction: float = VAL_FRACTION
                  ) -> tuple[list[LabeledQuery], list[LabeledQuery]]:
    """(train, val) by :func:`split_of` on the query text."""
    train = [q for q in queries if split_of(q.text, val_fraction) == "train"]
    val = [q for q in queries if split_of(q.text, val_fraction) == "val"]
    return train, val
