"""ONNX Runtime inference of a registry version, and the atomically swappable serving model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from cartwise.lifecycle import VersionCollections, collection_names
from cartwise.registry import MODEL_FILE, QUERY, TOKENIZER_FILE, ModelRegistry


def available_providers() -> list[str]:
    """ONNX Runtime execution providers to use, CUDA first when this build and machine have it."""
    present = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in present]


class OnnxEncoder:
    """Text -> unit vectors with one ONNX graph (mean pooling and L2 normalization inside the graph):
    ``model_file`` inside ``model_dir`` (a version's product tower by default), with its tokenizer.json.

    ``encode(texts)`` returns (B, D) float32 rows of unit L2 norm. Thread-safe: ONNX Runtime sessions
    and tokenizers' ``encode_batch`` allow concurrent calls.

    Texts are run in chunks of at most ``chunk`` texts of similar token length, each padded only to its own
    longest: padding every text of a batch to the batch's longest spent most of a catalog batch's CPU on
    padding (REES46 catalog, 1 thread: 132 products/s in batches of 256, 177/s sorted in chunks of 32)."""

    def __init__(self, model_dir: Path, max_tokens: int = 128, threads: int = 1,
                 providers: Sequence[str] | None = None, chunk: int = 32, model_file: str = MODEL_FILE) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(Path(model_dir) / model_file), options,
                                            providers=list(providers or available_providers()))
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()  # a tokenizer file may pad to a fixed length; _run pads per chunk
        self.dims = int(self.session.get_outputs()[0].shape[-1])
        self.chunk = chunk

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: (B, D) float32, unit rows. An empty input gives (0, D)."""
        return self.encode_ids(self.token_ids(texts))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The truncated token ids of each text: what :meth:`encode_ids` embeds. Two texts with the same ids
        (e.g. differing only in case or spacing, for an uncased tokenizer) have the same embedding."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode_ids(self, encodings: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed token id lists (from :meth:`token_ids`): (B, D) float32, unit rows."""
        out = np.zeros((len(encodings), self.dims), dtype=np.float32)
        order = np.argsort([len(ids) for ids in encodings], kind="stable")
        for start in range(0, len(order), self.chunk):
            rows = order[start:start + self.chunk]
            out[rows] = self._run([encodings[i] for i in rows])
        return out

    def _run(self, encodings: list[list[int]]) -> np.ndarray:
        """(B, D) vectors of token id lists, padded (id 0, masked out) to the longest."""
        width = max(map(len, encodings))
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, tokens in enumerate(encodings):
            ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1
        # The graph ends in L2 normalization (encoders.model.DualEncoder), checked at export.
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def query_encoder(registry: ModelRegistry, version: str, threads: int = 1) -> OnnxEncoder:
    """The encoder of ``version``'s queries: its distilled query tower, else its model.onnx (unverified:
    :meth:`ModelRegistry.verify` is the caller's). Raises RegistryError for a missing manifest."""
    manifest = registry.manifest(version)
    return OnnxEncoder(registry.path(version), manifest.max_tokens, threads, model_file=manifest.towers[QUERY].file)


@dataclass(frozen=True, slots=True)
class ServingModel:
    """One encoder version and the collections embedded with it; swapped only as a whole.

    ``number`` N pairs the encoder ``vN`` with ``products_vN``, ``users_vN`` and ``groups_vN``. ``encoder``
    is the product tower (products and users' histories); ``query_encoder`` the version's distilled query
    tower, None when queries use the product tower (cartwise/registry.py, "two towers")."""

    version: str
    number: int
    encoder: OnnxEncoder
    query_encoder: OnnxEncoder | None = None

    @property
    def query_tower(self) -> OnnxEncoder:
        """The encoder of Search queries: the distilled tower, else the product tower."""
        return self.query_encoder or self.encoder

    @property
    def collections(self) -> VersionCollections:
        """The collections embedded by this encoder."""
        return collection_names(self.version)

    @property
    def products(self) -> str:
        """Products collection embedded by this encoder."""
        return self.collections.products

    @property
    def users(self) -> str:
        """Users collection embedded by this encoder."""
        return self.collections.users

    @property
    def groups(self) -> str:
        """Text-groups collection embedded by this encoder (cartwise/groups.py)."""
        return self.collections.groups

    @classmethod
    def load(cls, registry: ModelRegistry, version: str, threads: int = 1) -> "ServingModel":
        """Load both towers of ``version`` after verifying their sha256. Raises cartwise.registry.RegistryError."""
        manifest = registry.verify(version)
        encoder = OnnxEncoder(registry.path(version), manifest.max_tokens, threads)
        queries = query_encoder(registry, version, threads) if manifest.distilled else None
        return cls(version, manifest.number, encoder, queries)

    def warm_up(self) -> None:
        """Encode one text with each tower: the first run of a session allocates, and that should not be a request's."""
        for encoder in {id(e): e for e in (self.encoder, self.query_tower)}.values():
            encoder.encode(["warm up"])


class ActiveModel:
    """Holder of the serving :class:`ServingModel`. A request reads ``current`` once and uses that
    snapshot throughout, so a swap (one reference assignment) never mixes versions in an answer.

    A cache of the registry's active version (the one record of it, cartwise/lifecycle.py), kept current
    by cartwise.lifecycle.ModelFollower."""

    def __init__(self, model: ServingModel) -> None:
        self._current = model

    @property
    def current(self) -> ServingModel:
        """The serving model at this instant."""
        return self._current

    def swap(self, model: ServingModel) -> ServingModel:
        """Replace the serving model; returns the previous one (kept by the caller for rollback)."""
        previous, self._current = self._current, model
        return previous
