"""Upstox's response envelopes, for services that answer as Upstox does (the simulator, and the
gateway's Upstox-compatible feed endpoint)."""

from __future__ import annotations

from typing import Final

INVALID_TOKEN: Final = "UDAPI100050"
INTERNAL: Final = "UDAPI100500"


def envelope(code: str, message: str) -> dict[str, object]:
    """`{"status": "error", "errors": [...]}` with snake_case keys and their camelCase twins."""
    return {
        "status": "error",
        "errors": [
            {
                "error_code": code,
                "message": message,
                "property_path": None,
                "invalid_value": None,
                "errorCode": code,
                "propertyPath": None,
                "invalidValue": None,
            }
        ],
    }


def success(data: object) -> dict[str, object]:
    return {"status": "success", "data": data}
