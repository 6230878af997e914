"""Whether a listening port is free: checked before a worker joins the cluster, so a taken port
is one line and a non-zero exit, not a traceback after the group join."""

from __future__ import annotations

import socket

from tracker_ws.domain.errors import PortInUse


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if `host:port` cannot be bound, i.e. something listens there. With SO_REUSEADDR,
    as our servers bind, so a closed socket lingering in TIME_WAIT does not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def ensure_port_free(port: int, host: str = "127.0.0.1", *, how: str = "TRACKER_WS_PORT") -> None:
    """PortInUse, in one line saying what to do (`how`), if `host:port` is taken."""
    if port_in_use(port, host):
        raise PortInUse(f"port {port} is in use (another tracker-ws?): stop it or set {how}")
