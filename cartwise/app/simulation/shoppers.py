"""Simulated shoppers: stable tastes drawn from the catalog with a seed, and the history the simulation gives them.

A product's traits are its brand and its category (:class:`Traits`). Each shopper likes a few brands and a
few categories, drawn in proportion to how many products of the catalog carry them (a big brand has more
fans), each with an affinity uniform in [0.3, 1]; the affinity for a product is the larger of its brand's and
its category's (0 for neither). Tastes never change during a run; the history (what the shopper bought) grows
as the simulation goes."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

FAVOURITE_BRANDS = 3
FAVOURITE_CATEGORIES = 2
AFFINITY_RANGE = (0.3, 1.0)


@dataclass(frozen=True, slots=True)
class Traits:
    """What tastes attach to in a product: its brand and its category (None: unknown)."""

    brand: str | None = None
    category: str | None = None


@dataclass(slots=True)
class Shopper:
    """One simulated shopper: ``user_id`` (sent on every request and event), affinities in [0, 1] by brand
    and by category, and the products bought so far."""

    user_id: str
    brands: dict[str, float]
    categories: dict[str, float]
    bought: set[str] = field(default_factory=set)

    def affinity(self, traits: Traits) -> float:
        """The shopper's affinity for a product of ``traits``, in [0, 1]."""
        return max(self.brands.get(traits.brand, 0.0) if traits.brand else 0.0,
                   self.categories.get(traits.category, 0.0) if traits.category else 0.0)


def _favourites(counts: Counter, k: int, rng: random.Random) -> dict[str, float]:
    """Up to ``k`` distinct values drawn in proportion to ``counts``, each with an affinity from
    AFFINITY_RANGE."""
    values, weights = list(counts), list(counts.values())
    chosen: dict[str, float] = {}
    for value in rng.choices(values, weights, k=4 * k) if values else ():
        if len(chosen) == k:
            break
        chosen.setdefault(value, rng.uniform(*AFFINITY_RANGE))
    return chosen


def make_shoppers(n: int, traits: Mapping[str, Traits], rng: random.Random, prefix: str = "sim") -> list[Shopper]:
    """``n`` shoppers ``{prefix}-0`` .. ``{prefix}-{n-1}`` with tastes drawn with ``rng`` from the brands and
    categories of ``traits`` (product id -> traits)."""
    brands = Counter(t.brand for t in traits.values() if t.brand)
    categories = Counter(t.category for t in traits.values() if t.category)
    return [Shopper(f"{prefix}-{i}", _favourites(brands, FAVOURITE_BRANDS, rng),
                    _favourites(categories, FAVOURITE_CATEGORIES, rng)) for i in range(n)]


def leading_brands(titles: Iterable[str], min_products: int) -> Counter:
    """Brands of a catalog whose titles start with the brand (Home Depot's do: "Hampton Bay ...", "BEHR ...",
    "DEWALT ..."): the first words, starting with a letter, that begin at least ``min_products`` titles."""
    counts = Counter(title.split()[0] for title in titles if title.split())
    return Counter({word: n for word, n in counts.items() if n >= min_products and word[:1].isalpha()})
