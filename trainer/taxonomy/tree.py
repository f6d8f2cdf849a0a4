"""A category tree over a catalog, with the level queries TB-HNS needs (docs/architecture.md, "TB-HNS").

Nodes are category paths (tuples of names, root = ()). Every product sits at one node, its "leaf"
(the deepest category it was given; a shallow path makes a shallow leaf). For a product in leaf L
with parent P and grandparent G:

* same leaf — other products of L (hardest, most likely false negatives);
* siblings  — products under P but not under L;
* cousins   — products under G but not under P;
* other departments — products whose top-level category differs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

Path = tuple[str, ...]
LEVELS = ("same_leaf", "sibling", "cousin", "other_department")


def split_path(raw: str, separator: str) -> list[str]:
    """Category names of a raw path string (Flipkart ``>>``, Amazon ``>``, REES46 ``.``), blanks dropped."""
    return [part.strip() for part in raw.split(separator) if part.strip()]


class CategoryTree:
    """Products 0..N-1 placed on category paths; level queries return (M,) int64 product indices.

    Products with no category are kept out of every level (they have no known relation to anything)."""

    def __init__(self, paths: Sequence[Sequence[str]]) -> None:
        self.leaves: list[Path] = [tuple(p) for p in paths]
        under: dict[Path, list[int]] = defaultdict(list)
        for index, leaf in enumerate(self.leaves):
            for depth in range(1, len(leaf) + 1):
                under[leaf[:depth]].append(index)
        self._under = {node: np.asarray(items, dtype=np.int64) for node, items in under.items()}
        self._categorized = np.flatnonzero([bool(leaf) for leaf in self.leaves])
        self._memo: dict[tuple, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.leaves)

    def under(self, node: Path) -> np.ndarray:
        """Products at or below ``node``; the root () holds every categorized product."""
        if not node:
            return self._categorized
        return self._under.get(tuple(node), np.empty(0, dtype=np.int64))

    def level(self, product: int, level: str) -> np.ndarray:
        """Products at ``level`` (one of :data:`LEVELS`) relative to ``product``, excluding itself.

        Raises ValueError for an unknown level."""
        leaf = self.leaves[product]
        if not leaf:
            return np.empty(0, dtype=np.int64)
        if level == "same_leaf":
            found = self._exact_leaf(leaf)
        elif level == "sibling":
            found = self._ring(leaf, 1)
        elif level == "cousin":
            found = self._ring(leaf, 2)
        elif level == "other_department":
            found = self._difference((), leaf[:1])
        else:
            raise ValueError(f"unknown taxonomy level {level!r}: choose one of {LEVELS}")
        return found[found != product]

    def _ring(self, leaf: Path, up: int) -> np.ndarray:
        """Products under the ancestor ``up`` levels above ``leaf`` but not under the one ``up - 1`` above."""
        if len(leaf) <= up:  # a shallow leaf has no such ancestor below the departments
            return np.empty(0, dtype=np.int64)
        return self._difference(leaf[: len(leaf) - up], leaf[: len(leaf) - up + 1])

    def _difference(self, outer: Path, inner: Path) -> np.ndarray:
        key = ("difference", outer, inner)
        if key not in self._memo:  # one entry per (node, ancestor): bounded by the tree's size
            self._memo[key] = np.setdiff1d(self.under(outer), self.under(inner), assume_unique=True)
        return self._memo[key]

    def _exact_leaf(self, leaf: Path) -> np.ndarray:
        key = ("leaf", leaf)
        if key not in self._memo:
            items = self.under(leaf)
            self._memo[key] = items[[len(self.leaves[i]) == len(leaf) for i in items]] if len(items) else items
        return self._memo[key]
