"""TB-HNS: taxonomy-based hard negatives with an easy -> hard curriculum (docs/architecture.md, "TB-HNS"; the
Flipkart taxonomy-hard-negative-sampling paper).

For a positive in leaf L: siblings (other children of L's parent) are the hardest useful negatives,
cousins are medium, other departments are easy, same-leaf products are hardest but most likely false
negatives (keep few; the margin mask in the loss drops the ones that score above the positive).
The level mix moves linearly from ``easy`` to ``hard`` over ``curriculum_steps`` (0: always ``hard``)."""

from __future__ import annotations

import numpy as np

from trainer.miners.base import take_allowed
from trainer.taxonomy.tree import LEVELS, CategoryTree

HARD_MIX = {"same_leaf": 1.0, "sibling": 2.0, "cousin": 1.0, "other_department": 0.0}
EASY_MIX = {"same_leaf": 0.0, "sibling": 0.0, "cousin": 1.0, "other_department": 1.0}


class TBHNSMiner:
    """Draws each negative's level from the current mix, then a product of that level at random."""

    name = "tbhns"

    def __init__(self, tree: CategoryTree, hard: dict[str, float] | None = None,
                 easy: dict[str, float] | None = None, curriculum_steps: int = 0, seed: int = 0) -> None:
        """Raises ValueError for an unknown level name or a mix with no positive weight."""
        self.tree, self.curriculum_steps = tree, curriculum_steps
        self.hard, self.easy = self._weights(hard or HARD_MIX), self._weights(easy or EASY_MIX)
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _weights(mix: dict[str, float]) -> np.ndarray:
        unknown = set(mix) - set(LEVELS)
        if unknown:
            raise ValueError(f"unknown taxonomy levels {sorted(unknown)}: choose from {LEVELS}")
        weights = np.array([max(mix.get(level, 0.0), 0.0) for level in LEVELS])
        if weights.sum() <= 0:
            raise ValueError("a TB-HNS mix needs at least one level with positive weight")
        return weights / weights.sum()

    def mix(self, step: int) -> np.ndarray:
        """(len(LEVELS),) level probabilities at ``step``."""
        if self.curriculum_steps <= 0:
            return self.hard
        t = min(step / self.curriculum_steps, 1.0)
        return (1 - t) * self.easy + t * self.hard

    def mine(self, query: int, positive: int, excluded: set[int], k: int, step: int) -> list[int]:
        draws = []  # a few products per drawn level, so an excluded one is replaced from the same level
        for level in self.rng.choice(len(LEVELS), size=k, p=self.mix(step)):
            pool = self.tree.level(positive, LEVELS[level])
            draws.append([int(p) for p in self.rng.choice(pool, size=min(3, len(pool)), replace=False)])
        ordered = [d[0] for d in draws if d] + [p for d in draws for p in d[1:]]
        return take_allowed(ordered, excluded, k, self.rng, len(self.tree))
