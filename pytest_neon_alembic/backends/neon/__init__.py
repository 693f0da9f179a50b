"""Branches from the Neon API: one Neon branch (with its own compute) per test branch.

``backend.py`` maps the backend protocol onto the API; ``api.py`` holds the calls
on one project (operations, deletes, connection strings); ``http.py`` is the one
HTTP stack (timeouts, retries, masking); ``names.py`` the branch names and
``sweep.py`` the removal of crashed runs' branches.
"""

from .backend import NeonBackend
from .names import current_git_branch, is_our_branch_name, sanitize_name_part

__all__ = ["NeonBackend", "current_git_branch", "is_our_branch_name", "sanitize_name_part"]
