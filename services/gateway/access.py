"""What a WebSocket handshake at the gateway is checked against: the viewer's credential
(`shared.viewer_access.ViewerAccess`, which the recorder shares) and the connection caps.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.security import ConnectionCaps
from services.gateway.settings import GatewaySettings
from shared.viewer_access import ViewerAccess


@dataclass(frozen=True)
class Admission:
    """What a WebSocket handshake is checked against, besides the origin."""

    viewers: ViewerAccess
    caps: ConnectionCaps

    @classmethod
    def of(cls, settings: GatewaySettings) -> Admission:
        caps = ConnectionCaps(
            settings.gateway_max_connections, settings.gateway_max_connections_per_address
        )
        return cls(ViewerAccess(settings), caps)
