"""After a create got no clear answer: find out whether it landed before sending it again.

A read timeout, a dropped connection or a gateway error (500/502/504/52x) on a
call that is not safe to repeat leaves its fate open: Neon may have applied it,
may apply it later, or never got it. Sending a create again blindly makes a
second branch (or endpoint), which nobody would delete. So the object is looked
up first, and the call sent again only when there is no sign of it, within the
retry budget. (Restores: ``restores.py``.)
"""

from __future__ import annotations

import time
from typing import Any

from ...errors import NeonAPIError
from .api import NeonProject
from .http import AmbiguousRequestError


def recover_created_branch(project: NeonProject, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The create's answer, from the branch if it was made, else from a new attempt.

    Names are unique per run, so a branch with this name is the one we asked for.
    """
    deadline = time.monotonic() + project.http.policy.budget
    while True:
        project.pause_before_lookup()
        found = project.branch_named(name)
        if found is not None:
            break
        try:
            return project.http.request("POST", project.path("branches"), json=body)
        except AmbiguousRequestError:
            if time.monotonic() > deadline:
                raise
        except NeonAPIError as error:
            # 409: the first attempt reached Neon after all (after the lookup).
            found = project.branch_named(name) if error.status == 409 else None
            if found is None:
                raise
            break
    branch_id = found["id"]
    endpoints = project.http.request("GET", project.path(f"branches/{branch_id}/endpoints"))
    read_write = [e for e in endpoints.get("endpoints") or [] if e.get("type") == "read_write"]
    operations = project.running_operations(branch_id)
    if not read_write:
        made = project.http.request(
            "POST",
            project.path("endpoints"),
            json={"endpoint": {"branch_id": branch_id, "type": "read_write"}},
        )
        read_write = [made.get("endpoint") or {}]
        operations += made.get("operations") or []
    return {"branch": found, "endpoints": read_write, "operations": operations}


def recover_readonly_endpoint(
    project: NeonProject, branch_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """After an endpoint create with no clear answer: the branch is ours, so a read-only
    endpoint on it is the one we asked for."""
    project.pause_before_lookup()
    endpoints = project.http.request("GET", project.path(f"branches/{branch_id}/endpoints"))
    read_only = [e for e in endpoints.get("endpoints") or [] if e.get("type") == "read_only"]
    if read_only:
        return {"endpoint": read_only[0], "operations": project.running_operations(branch_id)}
    return project.http.request("POST", project.path("endpoints"), json=body)
