"""Restore in place: each database knows what a test changed, and puts back only that.

``instrument`` runs once on the migrated database, before it is cloned. It
keeps, in the schema ``pytest_neon_alembic`` of that database (so every clone
has them):

- a pristine copy of every table (``p_<n>``, indexed on the primary key);
- statement-level triggers on every table that log, through transition
  tables, the primary keys of the rows each statement touched (``k_<n>``),
  and mark the table as changed (``changed``); a TRUNCATE or a table without
  a primary key marks the whole table; the triggers are ``ENABLE ALWAYS``, so
  ``session_replication_role = replica`` does not switch them off;
- an event trigger that marks any DDL (it cannot be undone in place);
- ``reset()``: one call that checks and restores. It deletes the logged rows
  and copies the pristine ones back (``session_replication_role = replica``
  on its connection: no foreign-key checks or cascades, no user triggers),
  puts moved sequences back, and answers ``clean``, ``restored``, ``swap``
  (DDL, large objects, tables in an inheritance tree: the caller replaces
  the database) or ``busy:<pids>`` (sessions still in a transaction: the
  caller ends them, so their writes are either committed and logged, or gone).

Nothing is attributed by timing: a write is logged by the transaction that
makes it, in the database it changes, and is visible exactly when that
transaction committed. A rolled-back write leaves no mark and needs no
restore (only sequences, which are compared with their pristine positions).
With several xdist workers each has its own database, so one worker's writes
never cost another a restore.

Logging is on only in databases where ``pytest_neon_alembic.track`` is
``on`` (set per database on the isolated branches): the dirty, shared and
read-only copies carry the triggers but pay only a setting lookup per
statement. Without superuser rights (a given server) there is no event
trigger and no ``session_replication_role``: DDL is then seen in the
catalogs (a row newer than the instrumentation, or a row count that moved)
and every change is put back by replacing the database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from psycopg import sql

SCHEMA = "pytest_neon_alembic"
TRACK_SETTING = "pytest_neon_alembic.track"
# The session settings of the connection that runs reset(): it must not log its
# own writes, and its DELETE/INSERT must not fire foreign keys, cascades or user
# triggers. Seq scans and hash/merge joins off: the logged keys drive index
# lookups, so a restore costs what the test changed, not the table's size. No JIT:
# those settings make costs look huge, and compiling the plans took ~1 s a call on
# a PostgreSQL built with LLVM (Debian's).
RESTORE_OPTIONS = (
    f"-c {TRACK_SETTING}=off -c session_replication_role=replica "
    "-c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off "
    "-c jit=off -c lock_timeout=5s"
)
LIMITED_OPTIONS = "-c jit=off -c lock_timeout=5s"

CLEAN, RESTORED, SWAP, BUSY = "clean", "restored", "swap", "busy"
# Rows put back in one table from which on reset() names it (``restored:<tables>``)
# for a VACUUM: the server may run without autovacuum, and the dead rows of
# large restores would otherwise slow every later scan of the table.
VACUUM_AFTER = 1000

_TABLES = r"""
SELECT c.oid::bigint, format('%I.%I', n.nspname, c.relname),
       c.relkind = 'p' OR c.relhassubclass OR c.relispartition
         OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid),
       ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = '' ORDER BY a.attnum),
       ARRAY(SELECT quote_ident(a.attname)
             FROM pg_index x, unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord),
                  pg_attribute a
             WHERE x.indrelid = c.oid AND x.indisprimary
               AND a.attrelid = c.oid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pytest_neon_alembic')
  AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 2
"""

_SEQUENCES = r"""
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pytest_neon_alembic')
  AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 1
"""

# Per-database catalogs a DDL statement changes (new row versions, or rows
# gone). Statistics are left out: ANALYZE writes them, and it is not a change.
_CATALOGS = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
  AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data', 'pg_largeobject')
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""


@dataclass(frozen=True)
class Table:
    oid: int
    name: str  # schema-qualified, quoted
    in_tree: bool  # partitioned, a partition, or in an inheritance tree
    columns: list[str]  # quoted; not generated
    key: list[str]  # quoted primary key columns; empty: none


def _ident(name: str) -> str:
    return f"{SCHEMA}.{name}"


def _signature(tables: list[Any], sequences: list[str], limited: bool) -> str:
    """What the instrumentation depends on: tables, columns and keys, sequences."""
    text = json.dumps([[list(map(str, row)) for row in tables], sequences, limited])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def instrumented_signature(connection: Any) -> str | None:
    """The signature stored by an earlier ``instrument`` of this database (None: none)."""
    row = connection.execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
        (SCHEMA,),
    ).fetchone()
    return row[0] if row else None


def can_restore_in_place(connection: Any) -> bool:
    """Superuser: event triggers and ``session_replication_role`` are available."""
    return bool(
        connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[
            0
        ]
    )


def instrument(connection: Any) -> bool:
    """Install the schema, triggers and ``reset()`` in this (migrated) database.

    Idempotent: nothing is done when the stored signature still matches the
    schema. Returns whether the database can be restored in place (False: a
    role without superuser rights; changes are then detected, and put back by
    replacing the database).
    """
    full = can_restore_in_place(connection)
    rows = connection.execute(_TABLES).fetchall()
    sequences = [row[0] for row in connection.execute(_SEQUENCES).fetchall()]
    signature = _signature(rows, sequences, not full)
    if instrumented_signature(connection) == signature:
        return full
    tables = [
        Table(oid=row[0], name=row[1], in_tree=row[2], columns=list(row[3]), key=list(row[4]))
        for row in rows
    ]
    for index, table in enumerate(tables):
        if not set(table.key) <= set(table.columns):
            # A generated key column: the whole table is put back instead.
            tables[index] = Table(table.oid, table.name, table.in_tree, table.columns, [])
    with connection.transaction():
        # Cascades to the triggers and the event trigger (they use its functions).
        connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        statements = [
            f"CREATE SCHEMA {SCHEMA}",
            f"CREATE UNLOGGED TABLE {_ident('changed')} (relid oid NOT NULL, how text NOT NULL)",
            # No serial for the order: a sequence here would count among the user's.
            f"CREATE UNLOGGED TABLE {_ident('created')} (classid oid, objid oid, kind text, "
            "identity text, at timestamptz DEFAULT clock_timestamp())",
            # Without superuser rights a database setting cannot switch logging on;
            # it is always on then, and bounded: one row per changed table.
            _MARK_FUNCTION if full else _MARK_FUNCTION.replace(_GATE, ""),
        ]
        for number, table in enumerate(tables, start=1):
            statements += _table_statements(number, table, full)
        statements.append(_warm_function(tables))
        # A stub first: replacing it at the end changes no catalog's row count, so the
        # counts reset() compares with (without superuser rights) include everything.
        statements.append(
            f"CREATE FUNCTION {_ident('reset')}(dry boolean DEFAULT false) RETURNS text "
            "LANGUAGE plpgsql "
            "AS $$BEGIN RETURN ''; END $$"
        )
        connection.execute("\n;\n".join(statements))
        if full:
            # Every object of the migrated state is older than the reset() stub.
            threshold = connection.execute(
                f"SELECT '{_ident('reset')}'::regproc::oid::bigint"
            ).fetchone()[0]
            connection.execute("\n;\n".join(_ddl_triggers(threshold)))
        connection.execute(
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                sql.Identifier(SCHEMA), sql.Literal(signature)
            )
        )
        connection.execute(_reset_function(connection, tables, sequences, full))
    return full


_TRACKING = f"current_setting('{TRACK_SETTING}', true) IS DISTINCT FROM 'on'"
_GATE = f"IF {_TRACKING} THEN RETURN NULL; END IF; -- tracking gate"

_MARK_FUNCTION = f"""
CREATE FUNCTION {_ident("mark")}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {_TRACKING} THEN RETURN NULL; END IF; -- tracking gate
  INSERT INTO {_ident("changed")} SELECT TG_RELID, TG_ARGV[0]
  WHERE NOT EXISTS (SELECT 1 FROM {_ident("changed")} WHERE relid = TG_RELID AND how = TG_ARGV[0]);
  RETURN NULL;
END $$"""

# DDL that only creates new objects is undone by dropping them (kinds below, as
# pg_event_trigger_ddl_commands() names them); any other DDL, or DDL on an object
# of the migrated state (an OID below the threshold: created before this
# instrumentation), asks for a swap.
_UNDOABLE = (
    "table",
    "index",
    "sequence",
    "view",
    "materialized view",
    "function",
    "procedure",
    "type",
    "domain",
    "schema",
)


def _ddl_triggers(threshold: int) -> list[str]:
    created = _ident("created")
    swap = f"INSERT INTO {_ident('changed')} VALUES (0, 'swap')"
    kinds = ", ".join(f"'{kind}'" for kind in _UNDOABLE)
    return [
        f"""
CREATE FUNCTION {_ident("on_ddl")}() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE c record;
BEGIN
  IF {_TRACKING} THEN RETURN; END IF;
  FOR c IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF c.in_extension OR c.schema_name LIKE 'pg\\_temp%' OR c.objid <= {threshold} THEN
      {swap};
    ELSIF c.command_tag LIKE 'CREATE %' AND c.object_type IN ({kinds})
        AND NOT EXISTS (SELECT 1 FROM {created} WHERE classid = c.classid AND objid = c.objid)
    THEN
      INSERT INTO {created} (classid, objid, kind, identity)
      VALUES (c.classid, c.objid, c.object_type, c.object_identity);
    ELSIF NOT EXISTS (SELECT 1 FROM {created} WHERE classid = c.classid AND objid = c.objid)
    THEN
      {swap};  -- not an object this test created
    END IF;
  END LOOP;
  INSERT INTO {_ident("changed")} SELECT 0, 'ddl'
  WHERE NOT EXISTS (SELECT 1 FROM {_ident("changed")} WHERE relid = 0 AND how = 'ddl');
END $$""",
        f"""
CREATE FUNCTION {_ident("on_drop")}() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {_TRACKING} THEN RETURN; END IF;
  IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() d
             WHERE d.original AND d.objid <= {threshold}) THEN
    {swap};
  END IF;
END $$""",
        f"CREATE EVENT TRIGGER {SCHEMA}_ddl ON ddl_command_end "
        f"EXECUTE FUNCTION {_ident('on_ddl')}()",
        f"CREATE EVENT TRIGGER {SCHEMA}_drop ON sql_drop EXECUTE FUNCTION {_ident('on_drop')}()",
        f"ALTER EVENT TRIGGER {SCHEMA}_ddl ENABLE ALWAYS",
        f"ALTER EVENT TRIGGER {SCHEMA}_drop ENABLE ALWAYS",
    ]


def _trigger(table: Table, name: str, event: str, function: str, referencing: str = "") -> str:
    return (
        f"CREATE TRIGGER {SCHEMA}_{name} AFTER {event} ON {table.name} {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}"
    )


def _table_statements(number: int, table: Table, full: bool) -> list[str]:
    """The pristine copy, key log, triggers and restore function of one table."""
    columns = ", ".join(table.columns)
    if table.in_tree or not full:
        how = "swap" if table.in_tree else "whole"
        triggers = [
            _trigger(
                table,
                "mark",
                "INSERT OR UPDATE OR DELETE OR TRUNCATE",
                f"{_ident('mark')}('{how}')",
            )
        ]
        statements = triggers
    else:
        pristine, log = _ident(f"p_{number}"), _ident(f"k_{number}")
        statements = [f"CREATE TABLE {pristine} AS SELECT {columns} FROM ONLY {table.name}"]
        if table.key:
            keys = ", ".join(table.key)
            statements += [
                f"CREATE UNIQUE INDEX ON {pristine} ({keys})",
                f"CREATE UNLOGGED TABLE {log} AS SELECT {keys} FROM {pristine} WITH NO DATA",
                _log_function(number, table),
                _trigger(
                    table,
                    "ins",
                    "INSERT",
                    f"{_ident(f'log_{number}')}()",
                    "REFERENCING NEW TABLE AS new_rows",
                ),
                _trigger(
                    table,
                    "upd",
                    "UPDATE",
                    f"{_ident(f'log_{number}')}()",
                    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
                ),
                _trigger(
                    table,
                    "del",
                    "DELETE",
                    f"{_ident(f'log_{number}')}()",
                    "REFERENCING OLD TABLE AS old_rows",
                ),
                _trigger(table, "trunc", "TRUNCATE", f"{_ident('mark')}('whole')"),
            ]
        else:
            statements.append(
                _trigger(
                    table,
                    "mark",
                    "INSERT OR UPDATE OR DELETE OR TRUNCATE",
                    f"{_ident('mark')}('whole')",
                )
            )
        statements.append(_restore_function(number, table))
    names = [s.split()[2] for s in statements if s.startswith("CREATE TRIGGER")]
    statements.append(
        f"ALTER TABLE {table.name} " + ", ".join(f"ENABLE ALWAYS TRIGGER {n}" for n in names)
    )
    return statements


def _log_function(number: int, table: Table) -> str:
    keys = ", ".join(table.key)
    log = _ident(f"k_{number}")
    return f"""
CREATE FUNCTION {_ident(f"log_{number}")}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {_TRACKING} THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {log} SELECT {keys} FROM new_rows;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO {log} SELECT {keys} FROM old_rows;
  ELSE
    INSERT INTO {log} SELECT {keys} FROM old_rows UNION ALL SELECT {keys} FROM new_rows;
  END IF;
  INSERT INTO {_ident("changed")} SELECT {table.oid}, 'rows'
  WHERE NOT EXISTS (SELECT 1 FROM {_ident("changed")} WHERE relid = {table.oid} AND how = 'rows');
  RETURN NULL;
END $$"""


def _restore_function(number: int, table: Table) -> str:
    """Put back the logged rows (or the whole table) from the pristine copy."""
    columns = ", ".join(table.columns)
    pristine = _ident(f"p_{number}")
    insert = f"INSERT INTO {table.name} ({columns}) OVERRIDING SYSTEM VALUE"
    whole = (
        f"DELETE FROM ONLY {table.name}; GET DIAGNOSTICS removed = ROW_COUNT; "
        f"{insert} SELECT {columns} FROM {pristine};"
    )
    if not table.key:
        body = whole
    else:
        log = _ident(f"k_{number}")
        keys = ", ".join(table.key)
        on_t = " AND ".join(f"t.{k} = k.{k}" for k in table.key)
        on_p = " AND ".join(f"p.{k} = k.{k}" for k in table.key)
        p_columns = ", ".join(f"p.{c}" for c in table.columns)
        body = f"""
  IF whole THEN
    {whole}
  ELSE
    DELETE FROM ONLY {table.name} t USING (SELECT DISTINCT {keys} FROM {log}) k WHERE {on_t};
    GET DIAGNOSTICS removed = ROW_COUNT;
    {insert} SELECT {p_columns} FROM (SELECT DISTINCT {keys} FROM {log}) k
      JOIN {pristine} p ON {on_p};
  END IF;
  DELETE FROM {log};"""
    return f"""
CREATE FUNCTION {_ident(f"restore_{number}")}(whole boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE removed bigint;
BEGIN {body}
  RETURN removed;
END $$"""


def _reset_function(connection: Any, tables: list[Table], sequences: list[str], full: bool) -> str:
    seal_xid = connection.execute("SELECT (txid_current() % 4294967296)::text").fetchone()[0]
    newer = f"age(xmin) < age('{seal_xid}'::xid)"
    swap_checks = [f"EXISTS (SELECT 1 FROM {_ident('changed')} WHERE how = 'swap')"]
    # Large objects live in catalogs no trigger sees: a row newer than this
    # instrumentation, or a count that moved. pg_largeobject itself (the
    # contents) is readable by superusers only.
    for catalog in ("pg_largeobject_metadata", "pg_largeobject") if full else ():
        count = connection.execute(f"SELECT count(*) FROM {catalog}").fetchone()[0]
        swap_checks.append(f"(SELECT count(*) FROM {catalog}) <> {count}")
        swap_checks.append(f"EXISTS (SELECT 1 FROM {catalog} WHERE {newer})")
    if not full:
        # No event trigger: DDL shows in the catalogs themselves.
        for (catalog,) in connection.execute(_CATALOGS).fetchall():
            count = connection.execute(
                sql.SQL("SELECT count(*) FROM pg_catalog.{}").format(sql.Identifier(catalog))
            ).fetchone()[0]
            swap_checks.append(f"(SELECT count(*) FROM pg_catalog.{catalog}) <> {count}")
            swap_checks.append(f"EXISTS (SELECT 1 FROM pg_catalog.{catalog} WHERE {newer})")
    moved, put_back = _sequence_checks(connection, sequences)
    cases = "\n".join(
        f"      WHEN {t.oid} THEN IF {_ident(f'restore_{n}')}(r.whole) >= {VACUUM_AFTER} THEN "
        f"bloated := array_append(bloated, {sql.Literal(t.name).as_string(connection)}::text); "
        "END IF;"
        for n, t in enumerate(tables, start=1)
        if not t.in_tree
    )
    if not full:
        restore_tables = "IF FOUND THEN RETURN 'swap'; END IF;"
    elif cases:
        restore_tables = f"""
  FOR r IN SELECT relid, bool_or(how = 'whole') AS whole
           FROM {_ident("changed")} GROUP BY relid LOOP
    CASE r.relid
{cases}
      ELSE NULL;
    END CASE;
  END LOOP;"""
    else:
        restore_tables = ""
    # In creation order: dropping a table takes its indexes and sequences with it
    # (IF EXISTS then skips them); CASCADE takes what was built on an object.
    undo_ddl = (
        f"""FOR r IN SELECT kind, identity FROM {_ident("created")} ORDER BY at LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', r.kind, r.identity);
  END LOOP;
  DELETE FROM {_ident("created")};"""
        if full
        else ""
    )
    return f"""
CREATE OR REPLACE FUNCTION {_ident("reset")}(dry boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  busy text;
  moved int[];
  bloated text[] := '{{}}';
  r record;
BEGIN
  SELECT string_agg(pid::text, ',') INTO busy FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()
    AND backend_type = 'client backend' AND state IS DISTINCT FROM 'idle';
  IF busy IS NOT NULL AND NOT dry THEN RETURN 'busy:' || busy; END IF;
  IF {" OR ".join(swap_checks)} THEN RETURN 'swap'; END IF;
  {moved}
  PERFORM 1 FROM {_ident("changed")} LIMIT 1;
  IF dry THEN RETURN 'dry'; END IF;
  IF NOT FOUND AND moved IS NULL THEN RETURN 'clean'; END IF;
  {undo_ddl}
  {restore_tables}
  {put_back}
  DELETE FROM {_ident("changed")};
  RETURN 'restored' || CASE WHEN cardinality(bloated) > 0
                            THEN ':' || array_to_string(bloated, chr(10)) ELSE '' END;
END $$"""


def _warm_function(tables: list[Table]) -> str:
    """``warm()``: plans a query on every table, so that a new session has the tables'
    catalog entries cached before a test needs them (they cost ~15 ms at first use)."""
    body = "\n  ".join(f"PERFORM 1 FROM {table.name} LIMIT 0;" for table in tables)
    return f"""
CREATE FUNCTION {_ident("warm")}() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  {body}
END $$"""


def _sequence_checks(connection: Any, sequences: list[str]) -> tuple[str, str]:
    """plpgsql that lists the sequences no longer at their pristine position, and puts them back."""
    if not sequences:
        return "", ""
    states = [
        connection.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
        for name in sequences
    ]
    compare = "\n    UNION ALL ".join(
        f"SELECT {i} AS i FROM {name} WHERE last_value <> {value} OR is_called <> {called}"
        for i, (name, (value, called)) in enumerate(zip(sequences, states, strict=True), 1)
    )
    values = ", ".join(
        f"({i}, {sql.Literal(name).as_string(connection)}::regclass, {value}::bigint, {called})"
        for i, (name, (value, called)) in enumerate(zip(sequences, states, strict=True), 1)
    )
    moved = f"SELECT array_agg(i) INTO moved FROM (\n    {compare}) m;"
    put_back = (
        f"IF moved IS NOT NULL THEN PERFORM setval(v.seq, v.value, v.called) "
        f"FROM (VALUES {values}) v(i, seq, value, called) WHERE v.i = ANY(moved); END IF;"
    )
    return moved, put_back


def reset(connection: Any) -> str:
    """Run the database's ``reset()``: ``clean``, ``restored`` (``restored:<tables>``: to
    vacuum, one a line), ``swap`` or ``busy:<pids>``."""
    return connection.execute(f"SELECT {_ident('reset')}()").fetchone()[0]


def prepare(connection: Any) -> None:
    """Plan ``reset()``'s checks on this session, changing nothing (they take a few
    milliseconds to plan the first time, in each new session)."""
    connection.execute(f"SELECT {_ident('reset')}(dry => true)")


WARM = f"SELECT {_ident('warm')}()"


def enable_tracking(connection: Any, database: str) -> None:
    """Log writes in ``database`` (sessions opened from now on)."""
    connection.execute(
        sql.SQL("ALTER DATABASE {} SET {} = on").format(
            sql.Identifier(database), sql.Identifier(*TRACK_SETTING.split("."))
        )
    )
