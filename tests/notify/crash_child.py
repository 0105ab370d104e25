"""Run one dispatcher pass over a database, to be killed with SIGKILL mid-send.

    python -m tests.notify.crash_child DB_PATH KEY_HEX WEBHOOK_URL
"""

from __future__ import annotations

import sys

from station.notify import Dispatcher, Outbox, StationInfo, WebhookSender
from station.store.db import Store


def main(argv: list[str]) -> None:
    db_path, key_hex, url = argv
    store = Store(db_path).open()
    outbox = Outbox(store, bytes.fromhex(key_hex))
    sender = WebhookSender(url, StationInfo("Riverside"), timeout_s=60)
    Dispatcher(outbox, [sender]).run_once()
    print("finished without being killed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
