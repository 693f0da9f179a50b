"""Reading an example run's outcomes from the reports examples_harness recorded."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit


def pmr_environment(server_url: str) -> dict[str, str]:
    """pytest-mock-resources' settings for a server given as a postgresql:// URL."""
    parts = urlsplit(server_url)
    return {
        "PMR_POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "PMR_POSTGRES_PORT": str(parts.port or 5432),
        "PMR_POSTGRES_USERNAME": parts.username or "postgres",
        "PMR_POSTGRES_PASSWORD": parts.password or "",
        "PMR_POSTGRES_ROOT_DATABASE": parts.path.lstrip("/") or "postgres",
    }


def item_outcomes(reports: list[dict]) -> dict[str, str]:
    """node id -> passed / failed / skipped / xfailed / xpassed, and "<node id> (setup)" or
    "(teardown)" -> error: what pytest's summary counts."""
    outcomes: dict[str, str] = {}
    for report in reports:
        nodeid, when, outcome = report["nodeid"], report["when"], report["outcome"]
        if when == "collect":
            outcomes[f"{nodeid} (collect)"] = "error"
        elif when == "call" and report["xfail"]:
            outcomes[nodeid] = "xfailed" if outcome == "skipped" else "xpassed"
        elif when == "call" or outcome == "skipped":
            outcomes[nodeid] = outcome
        elif outcome == "failed":
            outcomes[f"{nodeid} ({when})"] = "error"
    return outcomes


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    return dict(sorted(Counter(outcomes.values()).items()))


def check_outcomes(outcomes: dict[str, str], checks: tuple[str, ...]) -> dict[str, str]:
    """Each of pytest-alembic's built-in checks -> its outcome, or "not run"."""
    found = {}
    for check in checks:
        matches = [
            outcome
            for nodeid, outcome in outcomes.items()
            if nodeid.endswith("::" + check)
            and ("::pytest-alembic::" in nodeid or nodeid.startswith("alembic.ini::"))
        ]
        found[check] = matches[0] if len(matches) == 1 else ("not run" if not matches else "twice")
    return found
