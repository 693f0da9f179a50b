"""The hooks through which the guard and the redirect see every connection of a test process.

One class-level SQLAlchemy ``do_connect`` listener (every engine, sync and
async, any dialect but SQLite) and pool ``checkout`` listener; for drivers used
directly, psycopg 3's ``_get_connection_params`` (its documented place to
manipulate parameters before connecting, pools and subclasses included),
``psycopg2._connect`` (what ``psycopg2.connect`` calls with the final DSN) and
asyncpg's ``connect_utils._parse_connect_arguments`` (every resolved address).
A driver imported later is hooked as its module is imported (a finder on
``sys.meta_path``). Nothing else about the drivers changes.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable
from typing import Any

from . import guard, redirect
from .redact import mask_url

_installed: set[str] = set()


def install() -> None:
    """Hook SQLAlchemy once per process, the drivers already imported, and the others
    as soon as they are imported (a finder on ``sys.meta_path``)."""
    if "sqlalchemy" not in _installed:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from sqlalchemy.pool import Pool

        event.listen(Engine, "do_connect", _on_sqlalchemy_connect)
        event.listen(Pool, "checkout", redirect.on_checkout)
        _installed.add("sqlalchemy")
        sys.meta_path.insert(0, _HookOnImport())
    for name in _DRIVER_HOOKS:
        if name in sys.modules:
            _hook_driver(name)


def _hook_driver(name: str) -> None:
    if name not in _installed:
        _installed.add(name)
        _DRIVER_HOOKS[name]()


class _HookOnImport(importlib.abc.MetaPathFinder):
    """Hooks a driver right after its module is imported, whenever that happens."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _DRIVER_HOOKS or fullname in _installed:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HookingLoader(spec.loader, fullname)
                return spec
        return None


class _HookingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self.loader = loader
        self.name = name

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        _hook_driver(self.name)


def _on_sqlalchemy_connect(dialect, connection_record, cargs, cparams) -> Any:
    """Redirect an engine that follows the test (``redirect.py``), then guard the target."""
    if dialect.name == "sqlite":
        return None
    if guard.active() and redirect.follows(dialect, cparams):
        replacement = redirect.route(dialect, connection_record, cparams)
        if replacement is not None:
            return replacement  # the test's own connection: nothing new to connect to
    if not guard.active():
        return None
    dsn = next((arg for arg in cargs if isinstance(arg, str)), None) or cparams.get("dsn")
    if dsn:
        guard.check(_target_of_dsn(dsn))
    else:
        guard.check(guard.target_of_params(cparams))
    return None


def _target_of_dsn(dsn: str) -> guard.Target:
    if "://" in dsn:
        return guard.target_of_url(dsn)
    from psycopg.conninfo import conninfo_to_dict

    return guard.target_of_params(conninfo_to_dict(dsn), mask_url(dsn))


def _hook_psycopg() -> None:
    import psycopg

    original = psycopg.Connection._get_connection_params.__func__
    original_async = psycopg.AsyncConnection._get_connection_params.__func__

    def get_params(cls, conninfo: str, **kwargs: Any):
        params = original(cls, conninfo, **kwargs)
        guard.check(guard.target_of_params(params))
        return params

    async def get_params_async(cls, conninfo: str, **kwargs: Any):
        params = await original_async(cls, conninfo, **kwargs)
        guard.check(guard.target_of_params(params))
        return params

    psycopg.Connection._get_connection_params = classmethod(get_params)
    psycopg.AsyncConnection._get_connection_params = classmethod(get_params_async)


def _hook_psycopg2() -> None:
    import psycopg2

    original = psycopg2._connect

    def connect(dsn, *args: Any, **kwargs: Any):
        guard.check(_target_of_dsn(dsn))
        return original(dsn, *args, **kwargs)

    psycopg2._connect = connect


def _hook_asyncpg() -> None:
    from asyncpg import connect_utils

    original = connect_utils._parse_connect_arguments

    def parse(**kwargs: Any):
        addrs, params, config = original(**kwargs)
        shown = mask_url(kwargs["dsn"]) if kwargs.get("dsn") else ""
        for addr in addrs:
            host, port = addr if isinstance(addr, tuple) else (os.path.dirname(addr), None)
            guard.check(guard.Target(str(host), port, params.database, shown))
        return addrs, params, config

    connect_utils._parse_connect_arguments = parse


_DRIVER_HOOKS: dict[str, Callable[[], None]] = {
    "psycopg": _hook_psycopg,
    "psycopg2": _hook_psycopg2,
    "asyncpg.connect_utils": _hook_asyncpg,
}
