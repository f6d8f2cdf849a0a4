"""The committed gRPC stubs match protos/ (regenerate with `make protos`)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stem", ["search", "admin"])
def test_generated_stubs_are_up_to_date(tmp_path, stem):
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    proto = f"cartwise/v1/{stem}.proto"
    code = grpc_tools.main(["protoc", f"-I{ROOT / 'protos'}", f"--python_out={tmp_path}",
                            f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", str(ROOT / "protos" / proto)])
    assert code == 0
    for name in (f"{stem}_pb2.py", f"{stem}_pb2_grpc.py", f"{stem}_pb2.pyi"):
        assert (tmp_path / "cartwise/v1" / name).read_text() == (ROOT / "cartwise/v1" / name).read_text(), name
