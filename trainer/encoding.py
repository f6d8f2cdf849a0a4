"""Text -> vectors during training, with the frozen lower layers computed once.

On a 2-core CPU a full MiniLM-L6 forward + backward over a batch of 32 queries and 128 product texts
takes ~2.5 s. Training only the top ``trainable_layers`` lets the product texts' states after the
frozen bottom be cached (fp16, unpadded) and each step run just the top layers (DualEncoder.encode_from).
``trainable_layers`` = all layers trains everything end to end and caches nothing."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from encoders.model import DualEncoder

log = logging.getLogger(__name__)


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """The model's tokenizer truncating to ``max_tokens``, without padding (batches pad themselves)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


def pad(token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to (B, T) int64 ids and attention mask."""
    width = max(len(t) for t in token_ids)
    ids = torch.zeros(len(token_ids), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(token_ids):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return ids, mask


def freeze_lower_layers(model: DualEncoder, trainable_layers: int) -> int:
    """Freeze the embeddings and all but the top ``trainable_layers`` layers; returns the frozen count.

    Raises ValueError when ``trainable_layers`` is not in 1..num_layers."""
    if not 1 <= trainable_layers <= model.num_layers:
        raise ValueError(f"trainable_layers must be in 1..{model.num_layers}, got {trainable_layers}")
    frozen = model.num_layers - trainable_layers
    for p in model.backbone.embeddings.parameters():
        p.requires_grad = frozen == 0
    for i, layer in enumerate(model.backbone.encoder.layer):
        for p in layer.parameters():
            p.requires_grad = i >= frozen
    return frozen


class TextEncoder:
    """Encodes a fixed catalog by index and free query texts with one model, gradients optional.

    With ``frozen`` > 0 layers the catalog's states after them are computed once (or loaded from
    ``cache_dir``) and kept as one (sum of lengths, H) float16 array."""

    def __init__(self, model: DualEncoder, tokenizer: Tokenizer, query_tokenizer: Tokenizer,
                 product_texts: list[str], frozen: int, cache_dir: Path | None = None) -> None:
        self.model, self.tokenizer, self.query_tokenizer, self.frozen = model, tokenizer, query_tokenizer, frozen
        self.device = next(model.parameters()).device
        self.tokens = [e.ids for e in tokenizer.encode_batch(product_texts)]
        self.lengths = np.array([len(t) for t in self.tokens])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.states = self._load_or_build(cache_dir, product_texts) if frozen else None

    def __len__(self) -> int:
        return len(self.tokens)

    def _frozen_fingerprint(self) -> str:
        """sha256 of the frozen weights: a cache is reused only by a model with the same lower layers."""
        digest = hashlib.sha256()
        frozen = [self.model.backbone.embeddings, *self.model.backbone.encoder.layer[: self.frozen]]
        for module in frozen:
            for tensor in module.state_dict().values():
                digest.update(tensor.detach().cpu().numpy().tobytes())
        return digest.hexdigest()

    def _load_or_build(self, cache_dir: Path | None, texts: list[str]) -> np.ndarray:
        key = f"{self._frozen_fingerprint()}|{self.frozen}|{max(self.lengths)}"
        digest = hashlib.sha256(("\n".join(texts) + key).encode()).hexdigest()[:16]
        path = cache_dir / f"states-{digest}.npy" if cache_dir else None
        if path and path.exists():
            return np.load(path, mmap_mode="r")
        states = self._build()
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, states)
        return states

    def _build(self, batch: int = 256) -> np.ndarray:
        from tqdm import tqdm

        states = np.zeros((self.offsets[-1], self.model.backbone.config.hidden_size), dtype=np.float16)
        order = np.argsort(self.lengths, kind="stable")
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch), desc=f"caching layer-{self.frozen} states", unit="batch"):
                rows = order[start:start + batch]
                ids, mask = pad([self.tokens[i] for i in rows])
                hidden = self.model.hidden_at(ids.to(self.device), mask.to(self.device), self.frozen).float().cpu().numpy()
                for n, i in enumerate(rows):
                    states[self.offsets[i]:self.offsets[i + 1]] = hidden[n, :self.lengths[i]]
        return states

    def products(self, indices: np.ndarray | list[int], buckets: int = 3) -> torch.Tensor:
        """(B, D) unit vectors of catalog products ``indices`` (gradients follow torch's grad mode).

        Rows run in ``buckets`` length-sorted groups, each padded only to its own longest text (titles
        run 5-40 tokens: one padded batch wastes ~40% of the compute)."""
        indices = np.asarray(indices)
        order = np.argsort(self.lengths[indices], kind="stable")
        parts = [self._products(indices[chunk]) for chunk in np.array_split(order, buckets) if len(chunk)]
        return torch.cat(parts)[torch.from_numpy(np.argsort(order)).to(self.device)]

    def _products(self, indices: np.ndarray) -> torch.Tensor:
        rows = [self.tokens[i] for i in indices]
        ids, mask = (t.to(self.device) for t in pad(rows))
        if not self.frozen:
            return self.model(ids, mask)
        hidden = torch.zeros(len(rows), ids.shape[1], self.states.shape[1])
        for n, i in enumerate(indices):
            hidden[n, :self.lengths[i]] = torch.from_numpy(np.asarray(self.states[self.offsets[i]:self.offsets[i + 1]], dtype=np.float32))
        return self.model.encode_from(hidden.to(self.device), mask, self.frozen)

    def queries(self, texts: list[str]) -> torch.Tensor:
        """(B, D) unit vectors of query texts."""
        ids, mask = (t.to(self.device) for t in pad([e.ids for e in self.query_tokenizer.encode_batch(texts)]))
        if not self.frozen:
            return self.model(ids, mask)
        with torch.no_grad():
            hidden = self.model.hidden_at(ids, mask, self.frozen)
        return self.model.encode_from(hidden, mask, self.frozen)

    @torch.no_grad()
    def catalog(self, indices: np.ndarray | None = None, batch: int = 512) -> np.ndarray:
        """(N, D) float32 vectors of ``indices`` (default: the whole catalog), length-sorted batches."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        from tqdm import tqdm

        order = indices[np.argsort(self.lengths[indices], kind="stable")]
        vectors = {}
        for start in tqdm(range(0, len(order), batch), desc=f"embedding {len(order)} products", unit="batch",
                          disable=len(order) < 20 * batch, leave=False):
            rows = order[start:start + batch]
            for i, v in zip(rows, self._products(rows).float().cpu().numpy()):
                vectors[int(i)] = v
        return np.stack([vectors[int(i)] for i in indices])

    @torch.no_grad()
    def query_matrix(self, texts: list[str], batch: int = 512) -> np.ndarray:
        """(Q, D) float32 vectors of query texts."""
        return np.concatenate([self.queries(texts[s:s + batch]).float().cpu().numpy() for s in range(0, len(texts), batch)])
