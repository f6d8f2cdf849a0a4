"""Model registry: the on-disk store of encoder versions, each with an ONNX model and a manifest.

Layout::

    models/
      ACTIVE            # the serving version's name, replaced atomically (os.replace)
      lifecycle.json    # activation history (for rollback) and why a candidate was held back
      v1/manifest.json  # version, dims, sha256 of model.onnx, created_at, metrics, config
      v1/model.onnx
      v1/tokenizer.json
      v3/query.onnx     # only in a version with a distilled query tower (trainer/distill.py)

A version has two towers (issue #31): the *product* tower embeds products and users' histories (the stream
worker, a swap's backfill) and the *query* tower embeds Search queries (the API). Both are model.onnx
unless the version holds a distilled query.onnx; the manifest names each tower's file and sha256, and a
version is loaded, verified and swapped as a whole, so the two towers always move together.

What ``ACTIVE`` and ``lifecycle.json`` mean (candidate, active, retired; rollback; garbage collection),
the collections a version pairs with and how a version becomes active are the version lifecycle's,
:mod:`cartwise.lifecycle`; :class:`ModelRegistry` inherits its state methods."""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from cartwise.lifecycle import VERSION_RE, RegistryError, VersionLifecycle, atomic_write, version_number

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "weights.pt"  # torch state dict, so a later cycle can continue training from this version
MANIFEST_FILE = "manifest.json"
QUERY_TOWER_FILE = "query.onnx"  # a distilled query tower; without one, queries use MODEL_FILE
PRODUCT, QUERY = "product", "query"


class Tower(BaseModel):
    """One tower of a version: its ONNX ``file`` inside the version directory and that file's ``sha256``."""

    file: str
    sha256: str


class Manifest(BaseModel):
    """What a registry version is: ``number`` N of ``vN``, embedding ``dims``, ``sha256`` of the ONNX file."""

    version: str
    dims: int
    sha256: str
    created_at: datetime
    base: str = Field(description="what it was made from, e.g. the pretrained weights' package")
    max_tokens: int = 128
    metrics: dict[str, Any] = Field(default_factory=dict)  # name -> value, or a dataset -> {metric: value}
    config: dict = Field(default_factory=dict)
    towers: dict[str, Tower] = Field(default_factory=dict, description="product and query: the ONNX graph "
                                     "embedding each; a manifest written before towers were named uses "
                                     "model.onnx for both")

    @model_validator(mode="after")
    def _name_both_towers(self) -> "Manifest":
        product = Tower(file=MODEL_FILE, sha256=self.sha256)
        self.towers = {PRODUCT: product, QUERY: product, **self.towers}
        return self

    @property
    def distilled(self) -> bool:
        """Whether queries have a tower of their own (a distilled student), not the product tower."""
        return self.towers[QUERY].file != self.towers[PRODUCT].file

    @property
    def towers_digest(self) -> str:
        """Hex sha256 over both towers' sha256: what this version embeds with, as one key."""
        return hashlib.sha256(f"{self.towers[PRODUCT].sha256}:{self.towers[QUERY].sha256}".encode()).hexdigest()

    @property
    def number(self) -> int:
        """N of ``vN``."""
        return version_number(self.version)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry(VersionLifecycle):
    """Versions under ``root``; all writes are atomic renames so readers never see half a version. The
    versions' states (active, candidate, retired) are :class:`cartwise.lifecycle.VersionLifecycle`'s."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[str]:
        """Complete versions (with a manifest), oldest first."""
        names = [p.name for p in self.root.iterdir() if VERSION_RE.match(p.name) and (p / MANIFEST_FILE).exists()]
        return sorted(names, key=version_number)

    def next_version(self) -> str:
        """The name a new version gets: one past the highest version directory, complete or not."""
        numbers = [version_number(p.name) for p in self.root.iterdir() if VERSION_RE.match(p.name)]
        return f"v{max(numbers, default=0) + 1}"

    def trained(self, version: str) -> bool:
        """Whether ``version`` was published by training (its manifest's config says ``trained``)."""
        return bool(self.manifest(version).config.get("trained"))

    def newest_trained(self) -> str | None:
        """The newest version published by training, or None."""
        return next((v for v in reversed(self.versions()) if self.trained(v)), None)

    def path(self, version: str) -> Path:
        """Directory of ``version``."""
        version_number(version)
        return self.root / version

    def manifest(self, version: str) -> Manifest:
        """The manifest of ``version``; raises RegistryError if it is missing."""
        path = self.path(version) / MANIFEST_FILE
        if not path.exists():
            raise RegistryError(f"no manifest for {version} under {self.root}")
        return Manifest.model_validate_json(path.read_text())

    def publish(self, staging: Path, dims: int, base: str, max_tokens: int, metrics: dict | None = None,
                config: dict | None = None) -> Manifest:
        """Turn a staging directory holding model.onnx and tokenizer.json (and query.onnx for a distilled
        query tower) into the next version.

        The manifest is written last, inside the renamed directory, so a crash leaves no complete-looking
        half version. Raises RegistryError if a file is missing."""
        for name in (MODEL_FILE, TOKENIZER_FILE):
            if not (staging / name).exists():
                raise RegistryError(f"{staging} lacks {name}")
        version = self.next_version()
        target = self.root / version
        os.replace(staging, target)
        towers = {name: Tower(file=file, sha256=sha256_file(target / file))
                  for name, file in ((PRODUCT, MODEL_FILE), (QUERY, QUERY_TOWER_FILE)) if (target / file).exists()}
        manifest = Manifest(version=version, dims=dims, sha256=towers[PRODUCT].sha256,
                            created_at=datetime.now(timezone.utc), base=base, max_tokens=max_tokens,
                            metrics=metrics or {}, config=config or {}, towers=towers)
        atomic_write(target / MANIFEST_FILE, manifest.model_dump_json(indent=2))
        return manifest

    def verify(self, version: str) -> Manifest:
        """The manifest of ``version`` after checking each tower's sha256; raises RegistryError on a
        mismatch or a missing file."""
        manifest = self.manifest(version)
        for tower in {t.file: t for t in manifest.towers.values()}.values():
            path = self.path(version) / tower.file
            if not path.exists():
                raise RegistryError(f"{version}: {tower.file} is missing")
            actual = sha256_file(path)
            if actual != tower.sha256:
                raise RegistryError(f"{version}: {tower.file} sha256 {actual[:12]} != manifest {tower.sha256[:12]}")
        return manifest

    def staging_dir(self) -> Path:
        """A fresh directory inside the registry root for building a version (same filesystem for the rename)."""
        return Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
