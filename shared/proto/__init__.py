"""The Upstox market data feed V3 schema and its generated Python module.

Import messages from here (`from shared.proto import pb`) rather than from the generated file,
so the generated module's flat name never leaks into the rest of the code.
"""

from shared.proto import MarketDataFeedV3_pb2 as pb

PROTO_FILE = "MarketDataFeedV3.proto"

__all__ = ["PROTO_FILE", "pb"]
