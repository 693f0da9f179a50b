"""The sweep: this plugin's Neon branches left behind by runs that are over.

The migration, dirty and isolated branches live for a whole session and so
carry no expiry; when a run is killed, nothing else would delete them. Each
run sweeps at start (one branch list, already made to find the default
branch), and ``pytest --neon-cleanup`` does the same on demand and lists what
it left alone and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ...errors import NeonAlembicError
from .api import NeonProject
from .names import is_our_branch_name
from .owner import RunOwner

MIN_ORPHAN_AGE = 3600  # younger leftovers may belong to a run still going on another machine


@dataclass(frozen=True)
class Leftover:
    """A branch of this plugin found in the project, and what the sweep made of it."""

    name: str
    branch_id: str
    reason: str

    def label(self) -> str:
        return f"{self.name} ({self.branch_id})"


@dataclass
class SweepResult:
    deleted: list[Leftover] = field(default_factory=list)
    failed: list[Leftover] = field(default_factory=list)  # reason: why deleting failed
    spared: list[Leftover] = field(default_factory=list)  # reason: why it may still be in use

    def names(self) -> list[str]:
        return [leftover.name for leftover in self.deleted]


def sweep_orphans(
    project: NeonProject,
    branches: list[dict[str, Any]],
    *,
    annotations: dict[str, Any] | None = None,
    protected: set[str | None],
    branch_expiry: int,
    now: datetime | None = None,
) -> SweepResult:
    """Delete this plugin's branches left by runs that are over.

    Only branches that have this plugin's name shape and are neither the
    default, a protected nor a ``protected`` (parent) branch, and that are stale:

    * made by a run on this machine whose process is gone (their annotation
      says so, see ``owner.py``): at once, expiring ones included;
    * otherwise (another machine, a kept run, no annotation) that carry no
      expiry (Neon deletes those itself; sweeping them could cut short a
      concurrent run whose restores keep re-arming the expiry) and saw no
      creation or reset for ``max(branch_expiry, 1 h)``.

    Children go first (Neon refuses to delete a branch with children), and a
    branch with any child that is not itself deleted here is left alone: that
    child may be a live run's. Failures are reported in the result, never raised.
    """
    now = now or datetime.now(timezone.utc)
    max_age = max(branch_expiry, MIN_ORPHAN_AGE)
    annotations = annotations or {}
    children: dict[str, list[str]] = {}
    for branch in branches:
        if branch.get("parent_id"):
            children.setdefault(branch["parent_id"], []).append(branch["id"])
    by_id = {branch["id"]: branch for branch in branches}
    result = SweepResult()
    stale: dict[str, str] = {}
    for branch in branches:
        if not is_our_branch_name(str(branch.get("name", ""))):
            continue
        if branch.get("default") or branch.get("primary") or branch.get("protected"):
            continue
        if branch["id"] in protected:
            continue
        owner = RunOwner.from_annotation((annotations.get(branch["id"]) or {}).get("value"))
        verdict, reason = _staleness(branch, owner, now, max_age)
        if verdict:
            stale[branch["id"]] = reason
        else:
            result.spared.append(Leftover(str(branch.get("name")), branch["id"], reason))

    def remove(branch_id: str) -> bool:
        kids = children.get(branch_id, [])
        name = str(by_id[branch_id].get("name"))
        if not all(kid in stale and remove(kid) for kid in kids):
            reason = "it has a branch of its own that stays"
            result.spared.append(Leftover(name, branch_id, reason))
            return False
        try:
            project.delete(project.path(f"branches/{branch_id}"), branch_id, wait=True)
        except NeonAlembicError as error:
            result.failed.append(Leftover(name, branch_id, str(error)))
            return False
        result.deleted.append(Leftover(name, branch_id, stale[branch_id]))
        return True

    for branch_id in sorted(stale):
        if by_id[branch_id].get("parent_id") not in stale:  # roots; children recurse
            remove(branch_id)
    return result


def _staleness(
    branch: dict[str, Any], owner: RunOwner | None, now: datetime, max_age: int
) -> tuple[bool, str]:
    """(stale?, why) for one of this plugin's branches."""
    made_by = f"run {owner.run_id} " if owner and owner.run_id else ""
    if owner is not None and not owner.kept and owner.on_this_machine():
        if owner.gone():
            return True, f"{made_by}on this machine is over (process {owner.pid} is gone)"
        return False, f"{made_by}on this machine is still going (process {owner.pid})"
    where = (
        "kept with --neon-keep-branches"
        if owner is not None and owner.kept
        else f"made on {owner.host}"
        if owner is not None
        else "made by an older version or another tool"
    )
    if branch.get("expires_at"):
        return False, f"{made_by}{where}; Neon deletes it at {branch['expires_at']}"
    idle = _idle_seconds(branch, now)
    if idle > max_age:
        return True, f"{made_by}{where}; idle for {_duration(idle)}"
    return False, (
        f"{made_by}{where}; idle for {_duration(idle)}, may still be in use (stale once idle "
        f"for {_duration(max_age)})"
    )


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


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
