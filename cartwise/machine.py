"""Facts about this machine that every benchmark and generated report records next to its figures."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    """CPU model, cores, Python and ONNX Runtime versions of this machine."""
    import onnxruntime

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}
