"""``python -m tests.neon_emulator``: run the emulator until Ctrl-C, for manual poking.

Prints the base URL and the project; the API key is the one given (default
``test-key``) and is not printed back.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .server import NeonEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.neon_emulator",
        description="Neon API v2 emulator on 127.0.0.1, backed by a local PostgreSQL.",
    )
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--project-id", default="emulated-project-123456")
    parser.add_argument("--operation-delay", type=float, default=0.05, metavar="SECONDS")
    parser.add_argument(
        "--operation-jitter", type=float, default=0.0, metavar="FRACTION", help="e.g. 0.3: +-30 %%"
    )
    parser.add_argument(
        "--admin-url",
        default=None,
        help="superuser URL of an existing PostgreSQL (default: start an embedded one)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator = NeonEmulator(
        api_key=args.api_key,
        project_id=args.project_id,
        operation_delay=args.operation_delay,
        operation_jitter=args.operation_jitter,
        admin_url=args.admin_url,
        port=args.port,
    )
    with emulator:
        print(emulator.base_url, flush=True)
        print(f"project: {emulator.project_id}", flush=True)
        print(f"default branch: {emulator.default_branch_id}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
