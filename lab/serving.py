"""An ``http.server`` in a daemon thread: started once, stopped with a bounded join."""

from __future__ import annotations

import threading
from socketserver import BaseServer

JOIN_TIMEOUT = 10.0


class ServerThread:
    """Serves ``server`` in a named daemon thread until ``stop()``."""

    def __init__(self, server: BaseServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket, wait (bounded) for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=JOIN_TIMEOUT)
