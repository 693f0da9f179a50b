"""A Neon API v2 emulator on loopback, for testing the plugin's Neon backend offline.

Real HTTP, so the real ``neon-api`` client and ``requests`` are exercised; real
PostgreSQL behind every branch, so the connection strings the API returns
really connect (through one proxy port per endpoint) to that branch's data.

Use it from a conftest::

    from tests.neon_emulator import neon_emulator  # noqa: F401  (a fixture)

    def test_something(neon_emulator):
        api = NeonAPI(neon_emulator.api_key, base_url=neon_emulator.base_url + "/")
        ...

or build a fixture with other options or another scope with
:func:`neon_emulator_fixture`. Standalone: ``python -m tests.neon_emulator``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .faults import Fault, FaultInjector
from .server import NeonEmulator

__all__ = ["Fault", "FaultInjector", "NeonEmulator", "neon_emulator", "neon_emulator_fixture"]


def neon_emulator_fixture(
    *, scope: str = "function", admin_url_fixture: str | None = None, **options: Any
) -> Callable[..., Iterator[NeonEmulator]]:
    """Build a fixture yielding a started :class:`NeonEmulator`, stopped afterwards.

    ``options`` go to :class:`NeonEmulator` (``api_key``, ``project_id``,
    ``operation_delay``...). ``admin_url_fixture`` names a fixture returning a
    superuser URL of a PostgreSQL server to put the branches on (the emulator
    then starts no server of its own and drops what it created on stop);
    without it each emulator starts its own embedded server (~0.2 s).
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def fixture(request: pytest.FixtureRequest) -> Iterator[NeonEmulator]:
        admin_url = request.getfixturevalue(admin_url_fixture) if admin_url_fixture else None
        emulator = NeonEmulator(admin_url=admin_url, **options).start()
        try:
            yield emulator
        finally:
            emulator.stop()

    return fixture


#: A started emulator with default options and its own embedded PostgreSQL, per test.
neon_emulator = neon_emulator_fixture()
