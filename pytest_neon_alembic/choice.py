"""Which branch a test, or a longer-lived fixture, asked for — and how it is reset.

By fixture argument (``ENV_VAR_PRIORITY``), by the ``neon`` marker
(``@pytest.mark.neon``, ``neon("readonly" | "dirty" | "shared")``,
``neon(reset=...)``), or by ini ``neon_default_branch``; and the one shape of
pytest-neon 3.x that means something else here (a session-long ``neon_branch``).
"""

from __future__ import annotations

from typing import Any

import pytest

from .config import BRANCH_KINDS, RESET_STRATEGIES

# Which branch DATABASE_URL holds during a test: the first of these the test uses.
ENV_VAR_PRIORITY = (
    "neon_branch_isolated",
    "neon_branch_shared",
    "neon_branch_dirty",
    "neon_branch_readonly",
)


# The branch behind each public fixture a longer-lived fixture may ask for.
BRANCH_OF_FIXTURE = {
    "neon_branch_readonly": "neon_branch_readonly",
    "neon_engine_readonly": "neon_branch_readonly",
    "neon_branch_dirty": "neon_branch_dirty",
    "neon_engine_dirty": "neon_branch_dirty",
    "neon_branch_shared": "neon_branch_shared",
    "neon_migration_branch": "neon_migration_branch",
}


def branch_fixture_of(fixturedef: Any) -> str | None:
    """The branch fixture a session- or module-scoped user fixture asked for, if any.

    Function-scoped fixtures need nothing: the test's own setting is in place.
    """
    if fixturedef.scope == "function" or fixturedef.argname.startswith(("neon_", "_neon_")):
        return None
    return next((BRANCH_OF_FIXTURE[n] for n in fixturedef.argnames if n in BRANCH_OF_FIXTURE), None)


STRATEGY_KEY = pytest.StashKey[str]()


def reset_strategy(request: pytest.FixtureRequest, session: Any) -> str:
    """The test's reset strategy: its ``neon`` marker, else --neon-reset (validated once)."""
    if STRATEGY_KEY not in request.node.stash:
        request.node.stash[STRATEGY_KEY] = strategy_of(request, session)
    return request.node.stash[STRATEGY_KEY]


def strategy_of(request: pytest.FixtureRequest, session: Any) -> str:
    marker = neon_marker(request)
    if marker is None:
        return session.settings.reset
    return marker.kwargs.get("reset", session.settings.reset)


def neon_marker(request: pytest.FixtureRequest) -> Any:
    """The test's ``neon`` marker, validated: ``neon``, ``neon(kind)``, ``neon(reset=...)``."""
    marker = request.node.get_closest_marker("neon")
    if marker is None:
        return None
    strategy = marker.kwargs.get("reset", "branch")
    if (
        len(marker.args) > 1
        or (marker.args and marker.args[0] not in BRANCH_KINDS)
        or set(marker.kwargs) - {"reset"}
        or strategy not in RESET_STRATEGIES
    ):
        given = ", ".join(
            [repr(a) for a in marker.args] + [f"{k}={v!r}" for k, v in marker.kwargs.items()]
        )
        pytest.fail(
            f"pytest-neon-alembic: @pytest.mark.neon({given}) is not understood; use "
            f"@pytest.mark.neon (the isolated branch), @pytest.mark.neon(kind) with kind one of "
            f"{', '.join(repr(k) for k in BRANCH_KINDS)}, and reset= one of "
            f"{', '.join(RESET_STRATEGIES)}.",
            pytrace=False,
        )
    return marker


def asked_branch(request: pytest.FixtureRequest, session: Any) -> str | None:
    """The branch fixture a test asks for without an argument: its marker, else the ini
    ``neon_default_branch``."""
    marker = neon_marker(request)
    if marker is not None:
        return "neon_branch_" + (marker.args[0] if marker.args else "isolated")
    if session.settings.default_branch:
        return "neon_branch_" + session.settings.default_branch
    return None


def neon_branch_scope_mismatch(items: list[pytest.Item]) -> str | None:
    """A longer-lived fixture that asks for ``neon_branch``: pytest-neon 3.x's session-long
    branch, which is ``neon_branch_dirty`` here (``neon_branch`` is 2.3's, per test)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for name, definitions in info.name2fixturedefs.items() if info else ():
            definition = definitions[-1]
            if definition.scope != "function" and "neon_branch" in definition.argnames:
                return (
                    f"fixture {name!r} ({definition.scope}-scoped) asks for neon_branch, which "
                    "is pytest-neon 2.3's per-test branch here (the isolated branch). pytest-neon "
                    "3.x's session-long shared branch is neon_branch_dirty: replace neon_branch "
                    f"with neon_branch_dirty in {name!r}."
                )
    return None
