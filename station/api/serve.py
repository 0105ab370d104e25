"""Serving an ASGI app in the foreground until the process is told to stop.

Why not `uvicorn.run`: it catches a Ctrl-C that lands while the server is still starting
and then exits with status 3, its "startup failure", so a demo or station stopped a moment
early read as a broken one (a CI failure of the demo's shutdown test). And a signal that
lands before uvicorn has put its own handlers in place runs the caller's handler inside the
event loop, where an exception it raises (SystemExit for SIGTERM) tears the loop down with
a traceback and exit status 1 (the same test, under load). Here a stop signal at any moment
first asks the server to stop, and reaches the caller's handler only once the server has
shut down; a server that really could not start is a `ServeError` naming the address, for
the caller to print as one clear line."""

from __future__ import annotations

import signal
import threading
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServeError(RuntimeError):
    pass


def serve(app: Any, host: str, port: int, *, access_log: bool = True) -> None:
    """Blocks until SIGINT or SIGTERM; once the server has shut down, the signal is raised
    again with the caller's handlers back in place (SIGINT: KeyboardInterrupt by default)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=access_log))
    caught: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        caught.append(signum)
        server.should_exit = True

    # uvicorn puts its own handlers in place once its loop runs, and gives these back after
    previous = ({s: signal.signal(s, stop) for s in STOP_SIGNALS}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        server.run()
    except SystemExit as exc:
        if exc.code != STARTUP_FAILURE:
            raise
        if not caught:  # uvicorn has logged the reason (address in use, lifespan failure)
            raise ServeError(f"the HTTP server could not start on {host}:{port}") from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for signum in dict.fromkeys(caught):
        signal.raise_signal(signum)
