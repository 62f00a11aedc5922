"""A server on "another host" without leaving this machine: an HTTP proxy on loopback that sends
every request to one local port, whatever host the request names.

With HTTP_PROXY pointing at it, a client asked for `http://gpu-box:<port>/...` sends the request
in absolute form (`GET http://gpu-box:<port>/api/version`) to the proxy, which passes the bytes
through to 127.0.0.1:<port> unchanged (HTTP servers accept absolute-form targets). The name
`gpu-box` is never resolved and no packet leaves loopback, yet the client treats the target as a
remote host in every respect: its URL, its tags, its proxy.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class LoopbackProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> LoopbackProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
