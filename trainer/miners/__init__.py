"""Negative miners: each returns k catalog indices for a (query, positive), never a product judged
relevant for the query. ``inbatch`` uses no miner (the other queries' documents are the negatives)."""

from trainer.miners.ance import ANCEMiner
from trainer.miners.base import Miner
from trainer.miners.bm25 import BM25Miner
from trainer.miners.random import RandomMiner
from trainer.miners.tbhns import TBHNSMiner

__all__ = ["ANCEMiner", "BM25Miner", "Miner", "RandomMiner", "TBHNSMiner"]
