"""The exceptions the plugin raises: each one carries a message a user can act on.

The plugin turns every ``NeonAlembicError`` into one pytest error with that
message, never a traceback from deep inside, so the message must say what was
checked and what to do about it.
"""

from __future__ import annotations


class NeonAlembicError(Exception):
    """Base class: something the user can fix (configuration, migrations, server)."""


class ConfigError(NeonAlembicError):
    """An option or environment variable is missing, malformed or contradictory."""


class PostgresNotFoundError(NeonAlembicError):
    """No PostgreSQL server binaries were found for the embedded server."""


class ServerError(NeonAlembicError):
    """A PostgreSQL server could not be started, reached, or used as required."""


class MigrationError(NeonAlembicError):
    """Alembic could not bring the migration branch to head."""


class GuardError(NeonAlembicError):
    """An operation was refused because this session did not create the branch."""


class NeonAPIError(NeonAlembicError):
    """The Neon API refused a call, or could not be reached, and retrying did not help.

    ``status`` is the HTTP status (None when no answer came); ``api_message`` is
    Neon's own text, already masked. Only a message is needed to rebuild one
    (the run directory re-raises errors from their text in other processes).
    """

    def __init__(self, message: str, *, status: int | None = None, api_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.api_message = api_message


class ForeignDatabaseError(NeonAlembicError):
    """A connection to a database this test run did not create was refused before connecting."""


class NoBranchError(NeonAlembicError):
    """An engine that follows the test was used by a test that asked for no branch."""
