"""The backend protocol: what a source of branches must do, whatever the server.

Two implementations: ``LocalBackend`` (databases cloned on a PostgreSQL server,
embedded or given) and the Neon backend (branches through the Neon API). The
fixtures only see this protocol, so both give the same semantics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..branch import NeonBranch

# What ``after_test`` did: nothing to do, put back in place, or the branch replaced
# (local: another copy renamed in; Neon: a restore).
CLEAN, RESTORED, SWAPPED = "clean", "restored", "swapped"


class Backend(ABC):
    """A source of branches. Knows nothing of pytest; safe to use from any process."""

    name: str

    def branch_name(self, run_id: str, suffix: str) -> str:
        """The name of a new branch of run ``run_id`` (``suffix``: its role, e.g. ``dirty``).

        The default suits databases: letters, digits and ``_`` only, so it is a
        valid identifier that needs no quoting. Neon overrides it with
        pytest-neon's ``pytest-<git branch>-...`` shape.
        """
        return f"pytest_{run_id}_{suffix}"

    @abstractmethod
    def describe(self) -> str:
        """One line for the report, e.g. ``local (embedded PostgreSQL 16.4)``."""

    @abstractmethod
    def create_branch(
        self, name: str, parent: NeonBranch | None, *, can_expire: bool = True
    ) -> NeonBranch:
        """A new writable branch, a copy of ``parent`` (None: the configured root parent).

        ``can_expire=False`` for a branch that will have children (Neon refuses
        children under a branch with an expiry time).
        """

    @abstractmethod
    def create_readonly(self, name: str, source: NeonBranch) -> NeonBranch:
        """Read-only access to ``source``'s state, enforced by the database itself."""

    @abstractmethod
    def seal(self, branch: NeonBranch) -> list[list[Any]]:
        """Make a freshly migrated branch ready to be the parent of others.

        Returns its sequences' positions (``isolation.sequence_state``), the
        pristine state ``wrote_since`` compares with.
        """

    @abstractmethod
    def reset_branch(self, branch: NeonBranch, source: NeonBranch) -> None:
        """Bring ``branch`` back to ``source``'s state. Open connections are terminated."""

    @abstractmethod
    def delete_branch(self, branch: NeonBranch) -> None:
        """Delete a branch (or read-only access) this session created. Missing is fine."""

    def restore_cached(self, branch: NeonBranch, cache_name: str) -> bool:
        """Make ``branch`` a copy of a cached migrated state; False if there is none."""
        return False

    def store_cached(self, branch: NeonBranch, cache_name: str, project_prefix: str) -> None:  # noqa: B027
        """Keep the migrated state of ``branch`` for later runs (optional)."""

    def keep_branch(self, branch: NeonBranch) -> None:  # noqa: B027 - optional hook
        """Mark a branch kept on purpose, so no later run sweeps it away."""

    def write_marker(self, branch: NeonBranch) -> Any:
        """A value taken before a test, for ``wrote_since``; None means "cannot tell"."""
        return None

    def wrote_since(
        self,
        branch: NeonBranch,
        marker: Any,
        *,
        committed_only: bool = False,
        sequences: list[list[Any]] | None = None,
    ) -> bool:
        """Whether anything may have been written to ``branch`` since ``marker`` was taken.

        Must never answer False for a branch that was written: when in doubt,
        True. ``committed_only``: transactions that were rolled back don't count
        — unless the sequences are no longer at ``sequences`` (the pristine state
        ``seal`` returned), since ``nextval`` is never rolled back.
        """
        return True

    def after_test(
        self,
        branch: NeonBranch,
        source: NeonBranch,
        marker: Any,
        *,
        committed_only: bool = False,
        sequences: list[list[Any]] | None = None,
    ) -> str:
        """After a test on ``branch``: bring it back to ``source``'s state if anything
        was written since ``marker``. Returns ``CLEAN``, ``RESTORED`` or ``SWAPPED``.

        The default checks with ``wrote_since`` and resets with ``reset_branch``;
        a backend that can tell what changed and put back only that overrides it.
        """
        if not self.wrote_since(branch, marker, committed_only=committed_only, sequences=sequences):
            return CLEAN
        self.reset_branch(branch, source)
        return SWAPPED

    def to_state(self) -> dict[str, Any]:
        """What another process of the run needs to rebuild this backend."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held by this process."""
