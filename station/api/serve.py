"""Serving an ASGI app in the foreground until the process is told to stop.

Why not `uvicorn.run`: it catches a Ctrl-C that lands while the server is still starting
and then exits with status 3, its "startup failure", so a demo or station stopped a moment
early read as a broken one (a CI failure of the demo's shutdown test). Here a stop signal at
any moment reaches the caller as a stop, and a server that really could not start is a
`ServeError` naming the address, for the caller to print as one clear line."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE


class ServeError(RuntimeError):
    pass


def serve(app: Any, host: str, port: int, *, access_log: bool = True) -> None:
    """Blocks until SIGINT or SIGTERM, and then re-raises it the way uvicorn does once the
    server has shut down: SIGINT as KeyboardInterrupt, SIGTERM through the caller's handler
    (or the default one, which ends the process)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=access_log))
    try:
        server.run()
    except SystemExit as exc:
        # uvicorn has logged the reason (address in use, lifespan failure) just before
        if exc.code == STARTUP_FAILURE:
            raise ServeError(f"the HTTP server could not start on {host}:{port}") from None
        raise
