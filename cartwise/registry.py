"""Model registry: a directory of encoder versions, each with an ONNX model and a manifest.

Layout::

    models/
      ACTIVE            # the serving version's name, replaced atomically (os.replace)
      lifecycle.json    # activation history (for rollback) and why a candidate was held back
      v1/manifest.json  # version, dims, sha256 of model.onnx, created_at, metrics, config
      v1/model.onnx
      v1/tokenizer.json

Version ``vN`` pairs with the index collections ``products_vN`` and ``users_vN``.

Lifecycle: a published version is a *candidate*; activating it makes it *active* and the one it
replaces *retired* (kept for instant rollback until :meth:`ModelRegistry.collect_garbage`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

_VERSION_RE = re.compile(r"^v(\d+)$")
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "weights.pt"  # torch state dict, so a later cycle can continue training from this version
MANIFEST_FILE = "manifest.json"
LIFECYCLE_FILE = "lifecycle.json"
CANDIDATE, ACTIVE, RETIRED = "candidate", "active", "retired"


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

    @property
    def number(self) -> int:
        """N of ``vN``."""
        return version_number(self.version)


class RegistryError(RuntimeError):
    """A missing, incomplete or corrupt registry version."""


def version_number(version: str) -> int:
    """N of ``"vN"``; raises RegistryError for anything else."""
    match = _VERSION_RE.match(version)
    if not match:
        raise RegistryError(f"not a version name: {version!r} (expected vN)")
    return int(match.group(1))


def collection_names(version: str) -> tuple[str, str]:
    """The (products, users) index collections embedded by ``version``: ``products_vN``, ``users_vN``."""
    number = version_number(version)
    return f"products_v{number}", f"users_v{number}"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class ModelRegistry:
    """Versions under ``root``; all writes are atomic renames so readers never see half a version."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[str]:
        """Complete versions (with a manifest), oldest first."""
        names = [p.name for p in self.root.iterdir() if _VERSION_RE.match(p.name) and (p / MANIFEST_FILE).exists()]
        return sorted(names, key=version_number)

    def next_version(self) -> str:
        """The name a new version gets: one past the highest version directory, complete or not."""
        numbers = [version_number(p.name) for p in self.root.iterdir() if _VERSION_RE.match(p.name)]
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
        """Turn a staging directory holding model.onnx and tokenizer.json into the next version.

        The manifest is written last, inside the renamed directory, so a crash leaves no complete-looking
        half version. Raises RegistryError if a file is missing."""
        for name in (MODEL_FILE, TOKENIZER_FILE):
            if not (staging / name).exists():
                raise RegistryError(f"{staging} lacks {name}")
        version = self.next_version()
        target = self.root / version
        os.replace(staging, target)
        manifest = Manifest(version=version, dims=dims, sha256=sha256_file(target / MODEL_FILE),
                            created_at=datetime.now(timezone.utc), base=base, max_tokens=max_tokens,
                            metrics=metrics or {}, config=config or {})
        atomic_write(target / MANIFEST_FILE, manifest.model_dump_json(indent=2))
        return manifest

    def verify(self, version: str) -> Manifest:
        """The manifest of ``version`` after checking the ONNX file's sha256; raises RegistryError on mismatch."""
        manifest = self.manifest(version)
        actual = sha256_file(self.path(version) / MODEL_FILE)
        if actual != manifest.sha256:
            raise RegistryError(f"{version}: model.onnx sha256 {actual[:12]} != manifest {manifest.sha256[:12]}")
        return manifest

    def active(self) -> str | None:
        """The active version's name, or None before any is activated."""
        path = self.root / "ACTIVE"
        return path.read_text().strip() if path.exists() else None

    def activate(self, version: str) -> None:
        """Make ``version`` the active one (atomic) and record it in the activation history.
        Raises RegistryError if it is not complete."""
        self.manifest(version)
        lifecycle, current = self._lifecycle(), self.active()
        if current and current not in lifecycle["history"]:  # activated before the history was kept
            lifecycle["history"].append(current)
        lifecycle["history"].append(version)
        atomic_write(self.root / LIFECYCLE_FILE, json.dumps(lifecycle, indent=1))
        atomic_write(self.root / "ACTIVE", version + "\n")

    def rollback_target(self) -> str | None:
        """The most recently active version other than the current one that still exists, or None."""
        history, current = self._lifecycle()["history"], self.active()
        return next((v for v in reversed(history) if v != current and (self.root / v).is_dir()), None)

    def collect_garbage(self, keep_retired: int = 1) -> list[str]:
        """Delete retired versions but the ``keep_retired`` most recently active ones (rollback targets);
        active and candidate versions are never touched. Returns the deleted version names."""
        history, current = self._lifecycle()["history"], self.active()
        recent = [v for v in dict.fromkeys(reversed(history)) if v != current]  # newest first, unique
        doomed = [v for v in recent[keep_retired:] if (self.root / v).is_dir()]
        for version in doomed:
            shutil.rmtree(self.root / version)
        return doomed

    def hold(self, version: str, reason: str) -> None:
        """Record why ``version`` stays a candidate (e.g. the quality gate's verdict)."""
        self.manifest(version)
        lifecycle = self._lifecycle()
        lifecycle["reasons"][version] = reason
        atomic_write(self.root / LIFECYCLE_FILE, json.dumps(lifecycle, indent=1))

    def state(self, version: str) -> tuple[str, str | None]:
        """(candidate | active | retired, the recorded reason if any)."""
        lifecycle = self._lifecycle()
        state = ACTIVE if version == self.active() else RETIRED if version in lifecycle["history"] else CANDIDATE
        return state, lifecycle["reasons"].get(version)

    def _lifecycle(self) -> dict:
        path = self.root / LIFECYCLE_FILE
        lifecycle = json.loads(path.read_text()) if path.exists() else {}
        return {"history": lifecycle.get("history", []), "reasons": lifecycle.get("reasons", {})}

    def staging_dir(self) -> Path:
        """A fresh directory inside the registry root for building a version (same filesystem for the rename)."""
        return Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
