"""The shopper simulator's click model: what a shopper views, carts and buys on a page of search results.

A position-based model (PBM; Chuklin, Markov & de Rijke, "Click Models for Web Search", Morgan & Claypool
2015, ch. 3.3): the product at rank r (1-based) is viewed ("clicked") with probability

    P(view at r) = P(E_r = 1) · P(A = 1 | product) = ε_r · α(product),

examination ε_r independent of the product, attractiveness α independent of the rank, each rank decided
independently (the PBM has no cascade and no stop). Then a viewed product is carted with P(cart | view), and a
carted one bought with P(purchase | cart), both rising with the product's relevance.

Parameters (:class:`ClickParams`) and where they come from:

- **Examination** ε_r = (1/r)^η with η = 1: the rank-decay used to simulate position bias from graded
  judgments in Joachims, Swaminathan & Schnabel, "Unbiased Learning-to-Rank with Biased Feedback"
  (WSDM 2017), whose experiments default to η = 1.
- **Attractiveness from the judged grade.** Home Depot grades are means of 1 (irrelevant) .. 3 (perfect).
  α rises linearly from 0.05 at grade 1 to 0.95 at grade 3: the end points of the "navigational" click model
  of the interleaving simulations of Hofmann, Whiteson & de Rijke ("Reusing historical interaction data for
  faster online learning to rank for IR", WSDM 2013) and Schuth et al. ("Multileave gradient descent",
  WSDM 2016), where P(click | relevant) = 0.95 and P(click | irrelevant) = 0.05. An **unjudged** product is
  unknown rather than irrelevant (about 6 of 54,667 products are judged per query, shared/data/README.md),
  so it gets 0.10: above a judged-irrelevant one, far below a partly relevant one (α(2) = 0.50).
- **Affinity tilt.** A shopper's affinity a ∈ [0, 1] for the product's brand or category multiplies α by
  (1 + τ·a), capped at 1, τ = 1 (a favourite brand doubles the attraction). A simulator choice, not a
  published figure: it makes tastes visible to personalization.
- **Cart and purchase.** P(cart | view) = 0.10 · (g − 1)/2 for a judged grade g (0 for an irrelevant product,
  0.10 for a perfect one), 0.01 for an unjudged one; REES46's first hours (shared/data/rees46) have 2.3 carts
  or purchases per 100 views, search views of mostly relevant products a few times more. P(purchase | cart)
  = 0.30: Baymard Institute's average documented cart abandonment rate is 70% (49 studies). A shopper does
  not cart again what they already bought.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MIN_GRADE, MAX_GRADE = 1.0, 3.0  # Home Depot's judgment scale (means of raters' 1..3)


@dataclass(frozen=True, slots=True)
class ClickParams:
    """The click model's parameters (module doc: their sources). Probabilities in [0, 1]; ``eta`` ≥ 0."""

    eta: float = 1.0
    attract_irrelevant: float = 0.05
    attract_perfect: float = 0.95
    attract_unjudged: float = 0.10
    affinity_tilt: float = 1.0
    cart_perfect: float = 0.10
    cart_unjudged: float = 0.01
    purchase_given_cart: float = 0.30


def relevance(grade: float) -> float:
    """A Home Depot grade (1..3, clipped) as a fraction 0..1 of the way from irrelevant to perfect."""
    return (min(max(grade, MIN_GRADE), MAX_GRADE) - MIN_GRADE) / (MAX_GRADE - MIN_GRADE)


def examination(rank: int, params: ClickParams = ClickParams()) -> float:
    """ε_r = (1/r)^η, the probability that the shopper looks at rank ``rank`` (1-based). Raises ValueError
    for a rank below 1."""
    if rank < 1:
        raise ValueError(f"ranks start at 1, got {rank}")
    return rank ** -params.eta


def attractiveness(grade: float | None, affinity: float = 0.0, params: ClickParams = ClickParams()) -> float:
    """α: the probability that an examined product is viewed; ``grade`` the judged grade (None: unjudged),
    ``affinity`` the shopper's affinity for it in [0, 1]."""
    if grade is None:
        base = params.attract_unjudged
    else:
        base = params.attract_irrelevant + (params.attract_perfect - params.attract_irrelevant) * relevance(grade)
    return min(1.0, base * (1.0 + params.affinity_tilt * affinity))


def cart_probability(grade: float | None, params: ClickParams = ClickParams()) -> float:
    """P(cart | view) of a product of judged ``grade`` (None: unjudged)."""
    return params.cart_unjudged if grade is None else params.cart_perfect * relevance(grade)


@dataclass(frozen=True, slots=True)
class Shown:
    """One product on the page as the shopper sees it: its judged grade for the query (None: unjudged), the
    shopper's affinity for it (0..1) and whether the shopper bought it before."""

    grade: float | None
    affinity: float = 0.0
    bought_before: bool = False


@dataclass(frozen=True, slots=True)
class Actions:
    """What a shopper did on one page: 1-based ranks viewed, carted (a subset of viewed) and purchased (a
    subset of carted), ascending."""

    views: tuple[int, ...]
    carts: tuple[int, ...]
    purchases: tuple[int, ...]


def act(page: list[Shown], rng: random.Random, params: ClickParams = ClickParams()) -> Actions:
    """Draw a shopper's views, carts and purchases on ``page`` (rank 1 first) with ``rng``: each rank is
    viewed with ε_r·α, a view carted with P(cart | view) (never a product bought before), a cart bought with
    P(purchase | cart)."""
    views, carts, purchases = [], [], []
    for rank, shown in enumerate(page, start=1):
        if rng.random() >= examination(rank, params) * attractiveness(shown.grade, shown.affinity, params):
            continue
        views.append(rank)
        if shown.bought_before or rng.random() >= cart_probability(shown.grade, params):
            continue
        carts.append(rank)
        if rng.random() < params.purchase_given_cart:
            purchases.append(rank)
    return Actions(tuple(views), tuple(carts), tuple(purchases))
