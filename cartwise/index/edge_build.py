"""Building a Qdrant Edge shard's HNSW graph in a child process, on a copy of the shard.

qdrant-edge-py 0.9's ``EdgeShard.optimize`` holds the GIL for the whole build (measured: a thread
optimizing 30,000 random 384-d points for 24 s let a 1 ms ticker in the main thread run twice), which stops
the gRPC loop and faust's threads of the process that calls it. :class:`cartwise.index.EdgeIndex` hands the
build to a child process instead; this module is that child's entry point and the parent's call of it.

The child is run as a script (``python edge_build.py PATH``), not as ``-m cartwise.index.edge_build``: it
imports only ``qdrant_edge``, never the package (whose qdrant-client import costs 1.8 s of CPU) nor torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BUILT, OPTIMAL = "built", "optimal"  # the child's one line on stdout: whether it changed the shard
# the build uses every core; the serving process (Search, the stream worker) gets them first
CHILD_NICENESS = 10


class IndexBuildError(RuntimeError):
    """The child process that builds a shard copy's HNSW graph failed; the live shard is untouched."""


def build_copy(path: Path) -> bool:
    """Optimize the shard at ``path`` (a copy nobody else has open) in a child process and wait for it.

    Returns True when the child built segments, False when the shard was already optimal.
    Raises :class:`IndexBuildError` with the child's exit status and the tail of its stderr."""
    done = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True, check=False)
    result = done.stdout.strip().splitlines()[-1:] if done.stdout else []
    if done.returncode != 0 or result not in ([BUILT], [OPTIMAL]):
        tail = done.stderr.strip()[-2000:] or "no output"
        raise IndexBuildError(f"HNSW build of {path} failed (exit {done.returncode}): {tail}")
    return result == [BUILT]


def _main(path: str) -> None:
    import qdrant_edge as qe

    os.nice(CHILD_NICENESS)
    shard = qe.EdgeShard.load(path)
    built = shard.optimize()
    shard.flush()
    shard.close()
    print(BUILT if built else OPTIMAL)


if __name__ == "__main__":
    _main(sys.argv[1])
