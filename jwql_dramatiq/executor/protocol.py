"""Framing between the worker, the fork server and the task children.

Both ends are processes of the same worker on one host, connected by socketpairs, so frames
are pickles. (Messages in Redis stay JSON; pickle never crosses the network.)

- The *control* channel (worker <-> fork server) is a ``SOCK_SEQPACKET`` pair: one frame per
  packet, so a child's socket can travel with its announcement as ancillary data.
- A *task* channel (worker <-> one child) is a ``SOCK_STREAM`` pair with a 4-byte length prefix,
  since results and tracebacks may be larger than a packet.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
#: Largest control packet read at once.
CONTROL_PACKET_MAX = 65536


def send_frame(sock: socket.socket, obj: Any) -> None:
    """Send one length-prefixed pickled frame on a stream socket."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> Any:
    """Receive one frame from a stream socket; return None at end of stream (peer gone)."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    data = _recv_exact(sock, _HEADER.unpack(header)[0])
    return None if data is None else pickle.loads(data)


def send_packet(sock: socket.socket, obj: Any, fds: list[int] | None = None) -> None:
    """Send one pickled packet on the control channel, with file descriptors attached if given."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def recv_packet(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """Receive one control packet and any descriptors; None when the peer has gone."""
    data, fds, _flags, _addr = socket.recv_fds(sock, CONTROL_PACKET_MAX, 4)
    if not data:
        for fd in fds:
            socket.close(fd)
        return None
    return pickle.loads(data), list(fds)
