"""The generated module matches the .proto, and the .proto matches Upstox's published schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from shared.proto import pb

PROTO_DIR = Path(__file__).resolve().parents[1] / "shared" / "proto"
PACKAGE = "com.upstox.marketdatafeederv3udapi.rpc.proto"


def compiled_descriptor(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "schema.pb"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", "MarketDataFeedV3.proto",
        ],
        check=True,
    )  # fmt: skip
    file_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    descriptor = file_set.file[0]
    # protoc fills json_name in a descriptor set; the generated module's copy leaves it out.
    for message in [
        *descriptor.message_type,
        *(n for m in descriptor.message_type for n in m.nested_type),
    ]:
        for field in message.field:
            field.ClearField("json_name")
    return descriptor


def test_generated_module_matches_proto_file(tmp_path: Path) -> None:
    from_proto = compiled_descriptor(tmp_path)
    from_module = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(from_module)
    assert from_module == from_proto


def field_numbers(message: str) -> dict[str, tuple[int, int]]:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    return {field.name: (field.number, field.type) for field in descriptor.fields}


def test_schema_facts() -> None:
    F = descriptor_pb2.FieldDescriptorProto
    assert pb.DESCRIPTOR.package == PACKAGE
    # The pre-2025 proto numbered cp as 3; the current one has ltq=3, cp=4 and iep=5 (wrapper).
    assert field_numbers("LTPC") == {
        "ltp": (1, F.TYPE_DOUBLE),
        "ltt": (2, F.TYPE_INT64),
        "ltq": (3, F.TYPE_INT64),
        "cp": (4, F.TYPE_DOUBLE),
        "iep": (5, F.TYPE_MESSAGE),
    }
    market_ff = field_numbers("MarketFullFeed")
    assert [market_ff[name][0] for name in ("iep", "rp", "ieq", "iiqTotal", "iiqM")] == [
        11, 12, 13, 14, 15,
    ]  # fmt: skip
    assert market_ff["casEligible"] == (16, F.TYPE_BOOL)
    assert set(field_numbers("MarketInfo")) == {
        "segmentStatus",
        "casMarketStatus",
        "preOpenSessionStatus",
    }
    assert pb.RequestMode.Value("full_d5") == 1
    assert pb.RequestMode.Value("option_greeks") == 2
    assert pb.RequestMode.Value("full_d30") == 3
    assert pb.Type.Value("market_info") == 2
    assert pb.MarketStatus.Value("CLOSING_END") == 5
