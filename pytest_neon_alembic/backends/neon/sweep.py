"""The sweep: this plugin's Neon branches left behind by runs that died.

The migration, dirty and isolated branches live for a whole session and so
carry no expiry; when a run is killed, nothing else would delete them.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any

from ...errors import NeonAlembicError
from .api import NeonProject
from .names import is_our_branch_name

logger = logging.getLogger("pytest_neon_alembic.neon")

MIN_ORPHAN_AGE = 3600  # younger leftovers may belong to a run still going on another machine


def sweep_orphans(
    project: NeonProject,
    branches: list[dict[str, Any]],
    *,
    protected: set[str | None],
    branch_expiry: int,
    now: datetime | None = None,
) -> list[str]:
    """Delete this plugin's branches left by runs that died; the names deleted.

    Only branches that (1) have this plugin's name shape, (2) carry no
    expiry (those Neon deletes itself; sweeping them could cut short a
    concurrent run whose restores keep re-arming the expiry), (3) saw no
    creation or reset for ``max(branch_expiry, 1 h)``, and (4) are not the
    default or a protected branch. Children go first (Neon refuses to delete a
    branch with children), and a branch with any child that is not itself
    deleted here is left alone: that child may be a concurrent run's.
    Failures are logged, never fatal.
    """
    now = now or datetime.now(timezone.utc)
    max_age = max(branch_expiry, MIN_ORPHAN_AGE)
    children: dict[str, list[str]] = {}
    for branch in branches:
        if branch.get("parent_id"):
            children.setdefault(branch["parent_id"], []).append(branch["id"])
    by_id = {branch["id"]: branch for branch in branches}
    candidates = {
        branch["id"]
        for branch in branches
        if is_our_branch_name(str(branch.get("name", "")))
        and not branch.get("expires_at")
        and not (branch.get("default") or branch.get("primary") or branch.get("protected"))
        and branch["id"] not in protected
        and _idle_seconds(branch, now) > max_age
    }
    deleted: list[str] = []

    def remove(branch_id: str) -> bool:
        kids = children.get(branch_id, [])
        if not all(kid in candidates and remove(kid) for kid in kids):
            logger.info("Not sweeping %s: it has a child that stays.", branch_id)
            return False
        name = by_id[branch_id].get("name")
        try:
            project.delete(project.path(f"branches/{branch_id}"), branch_id, wait=True)
        except NeonAlembicError as error:
            logger.warning("Could not delete stale test branch %s (%s): %s", name, branch_id, error)
            return False
        deleted.append(str(name))
        return True

    for branch_id in sorted(candidates):
        parent = by_id[branch_id].get("parent_id")
        if parent not in candidates:  # roots of the candidate forest; children recurse
            remove(branch_id)
    if deleted:
        logger.warning(
            "Deleted %d stale test branch(es) left by earlier runs in Neon project %s: %s",
            len(deleted),
            project.project_id,
            ", ".join(deleted),
        )
    return deleted


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: drop the fraction.
    text = re.sub(r"(\d{2}:\d{2}:\d{2})\.\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _idle_seconds(branch: dict[str, Any], now: datetime) -> float:
    """Seconds since the branch was created or last reset; 0 when the API gives no date."""
    stamps = (branch.get("created_at"), branch.get("last_reset_at"))
    times = [parsed for parsed in map(_parse_time, stamps) if parsed is not None]
    if not times:
        return 0.0
    return (now - max(times)).total_seconds()
