"""The hot path's histograms and the tick timestamp reader."""

from __future__ import annotations

from services.gateway.timing import tick_ts_ms
from shared.metrics import Buckets
from shared.redis_contract import encode_tick


def test_buckets_are_cumulative_like_prometheus() -> None:
    buckets = Buckets((0.01, 0.1))
    for seconds in (0.005, 0.01, 0.05, 3.0):
        buckets.observe(seconds)
    assert buckets.cumulative() == [("0.01", 2.0), ("0.1", 3.0), ("+Inf", 4.0)]
    assert abs(buckets.total - 3.065) < 1e-9


def test_tick_ts_is_read_from_the_metadata_not_the_value() -> None:
    payload = encode_tick(b'{"ltpc":{"ltp":1.0},"x":{"ts":5}}', 7, "e", 1740727891235)
    assert tick_ts_ms(payload) == 1740727891235
    assert tick_ts_ms(b"no metadata") is None
    assert tick_ts_ms(b'{}\n{"seq":1,"ts":oops}') is None
