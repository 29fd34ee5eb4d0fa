"""Fixtures of the composition's tests: a dependency that hangs."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest


class HangingServer:
    """A TCP server that accepts every connection and never answers a byte: a broker or Redis that hangs."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._listener.settimeout(0.05)
        self._closed = threading.Event()
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="hanging-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(client)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for client in self.accepted:
            client.close()


@pytest.fixture
def hanging_server() -> Iterator[HangingServer]:
    server = HangingServer()
    try:
        yield server
    finally:
        server.close()
