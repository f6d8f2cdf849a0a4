"""Assembling one training batch: B queries, their positives, mined negatives and graded groups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.data import LabeledQuery
from trainer.miners.base import Miner

MINED_GRADE = 0.0  # a mined negative ranks below every judged grade in the ROAR group
GROUP_JUDGED = 2  # judged products of lower grades added to each ROAR group


@dataclass
class Batch:
    """Column layout shared by the losses. ``products`` (M,) catalog indices scored by every query;
    ``positive`` (B,) column of each query's positive; ``excluded`` (B, M) True where the product is
    judged relevant for the query; ``group``/``grades`` (B, G) graded columns, best first, −1 padded."""

    queries: list[str]
    products: np.ndarray
    positive: torch.Tensor
    excluded: torch.Tensor
    group: torch.Tensor
    grades: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        """This batch with its tensors on ``device``."""
        return Batch(self.queries, self.products, self.positive.to(device), self.excluded.to(device),
                     self.group.to(device), self.grades.to(device))


def build_batch(examples: list[tuple[int, LabeledQuery]], miner: Miner | None, config: TrainConfig,
                step: int, rng: np.random.Generator) -> Batch:
    """One batch from (train index, query) pairs; each needs at least one positive."""
    columns: dict[int, int] = {}
    positives, groups = [], []

    def column(product: int) -> int:
        return columns.setdefault(product, len(columns))

    for index, query in examples:
        candidates = query.positives(config.positive_grade)
        positive = int(rng.choice(candidates))
        excluded = query.excluded(config.exclude_grade) | {positive}
        mined = miner.mine(index, positive, excluded, config.negatives_per_query, step) if miner else []
        positives.append(column(positive))
        lower = sorted({g for g in query.judged.values() if g < query.judged[positive]}, reverse=True)
        graded = [(positive, query.judged[positive])]
        for grade in lower[:GROUP_JUDGED]:
            same = [p for p, g in query.judged.items() if g == grade]
            graded.append((int(rng.choice(same)), grade))
        graded += [(m, MINED_GRADE) for m in mined[:1]]
        for m in mined:
            column(m)
        groups.append([(column(p), g) for p, g in graded])
    products = np.fromiter(columns, dtype=np.int64, count=len(columns))
    judged = [q.excluded(config.exclude_grade) for _, q in examples]
    excluded = torch.tensor([[int(p) in rel for p in products] for rel in judged])
    width = max(len(g) for g in groups)
    group = torch.full((len(groups), width), -1, dtype=torch.long)
    grades = torch.zeros(len(groups), width)
    for row, members in enumerate(groups):
        group[row, :len(members)] = torch.tensor([c for c, _ in members])
        grades[row, :len(members)] = torch.tensor([g for _, g in members])
    return Batch([q.text for _, q in examples], products, torch.tensor(positives), excluded, group, grades)
