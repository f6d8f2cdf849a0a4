"""Personalization fusion: one ANN query with q̂ + α·û (DESIGN.md, "Personalization").

s(q, u, p) = <q̂, p̂> + α(n) <û, p̂>, α(n) = α_max · n / (n + n₀); a cold user gets α = 0.
User-preference weighting of the query follows Velkoski et al. 2025 (arXiv 2511.00694, §III)."""

from __future__ import annotations

import numpy as np

from cartwise.settings import Personalization


def personalization_weight(n: int, params: Personalization) -> float:
    """α(n) = α_max · n / (n + n₀); 0 for n = 0."""
    return params.alpha_max * n / (n + params.n0) if n > 0 else 0.0


def fused_query(query: np.ndarray | None, user: np.ndarray | None, alpha: float) -> np.ndarray:
    """The ANN query vector (D,) float32: q̂ + α·û, or û alone when there is no query.

    Raises ValueError when both are None."""
    if query is None and user is None:
        raise ValueError("need a query vector or a user vector")
    if query is None:
        return user
    if user is None or alpha == 0.0:
        return query
    return (query + alpha * user).astype(np.float32)
