"""Names of the branches this plugin makes on Neon, and how it recognises them.

pytest-neon 2.3 users know ``pytest-<git branch>-...``; the sweep relies on the
exact shape to never take anybody else's branch for one of ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess

from ...branch import BranchRole

BRANCH_PREFIX = "pytest-"
GIT_PART_LENGTH = 15  # as pytest-neon 2.3: pytest-<git branch, 15 chars>-...

# Names this plugin gives: pytest-[<git>-]<8-hex run id>-<role>[-<detail>]. pytest-neon
# 2.x uses a 4-hex id, and its 3.x suffix "-test" is no role of ours, so the sweep
# cannot mistake their branches (or anyone else's) for ours.
_ROLES = "|".join(re.escape(role.value) for role in BranchRole)
_OUR_NAME = re.compile(
    rf"^pytest-(?:[A-Za-z0-9_-]{{1,{GIT_PART_LENGTH}}}-)?[0-9a-f]{{8}}-(?:{_ROLES})"
    r"(?:-[A-Za-z0-9_-]+)?$"
)


def sanitize_name_part(text: str) -> str:
    """Keep letters, digits, ``_`` and ``-`` (as pytest-neon does), one ``-`` for the rest."""
    text = re.sub(r"[^A-Za-z0-9_-]", "-", text)
    return re.sub(r"-+", "-", text).strip("-")


def current_git_branch(cwd: str | None = None) -> str | None:
    """The checked-out git branch, sanitised and cut to 15 characters; None outside git.

    On a detached HEAD (CI checkouts) the CI's branch variable is used instead, so
    a stale branch still says which PR made it.
    """
    name = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            # symbolic-ref also names the branch of a repository with no commit yet;
            # it fails on a detached HEAD, where the CI variables below take over.
            ["git", "symbolic-ref", "--short", "-q", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=cwd,
        )
        if result.returncode == 0:
            name = result.stdout.strip()
    if not name:
        name = next(
            (
                os.environ[variable]
                for variable in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME")
                if os.environ.get(variable)
            ),
            None,
        )
    if not name:
        return None
    return sanitize_name_part(sanitize_name_part(name)[:GIT_PART_LENGTH]) or None


def is_our_branch_name(name: str) -> bool:
    """Whether ``name`` has the shape of a branch this plugin creates."""
    return bool(_OUR_NAME.match(name))


def branch_name(git_branch: str | None, run_id: str, suffix: str) -> str:
    """``pytest-<git branch>-<run id>-<suffix>``, the shape pytest-neon 2.3 users know."""
    parts = [BRANCH_PREFIX.rstrip("-")]
    if git_branch:
        parts.append(git_branch)
    parts += [sanitize_name_part(run_id), sanitize_name_part(suffix.replace("_", "-"))]
    return "-".join(parts)
