"""Model instances from raw SQL, for the few queries on the annotation hot path.

`Model.objects.raw()` works out, for every query, which columns are the model's fields, which converters
they need and in which order to pass them to the model: about 60 µs a query, more than a prepared
PostgreSQL statement costs the client. fetch_models does the same work once per (model, columns) and
keeps it. On other databases (the embedded SQLite demo), whose values need more converting, it uses raw().
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model
from django.db.models.base import DEFERRED

M = TypeVar("M", bound=Model)

# (the model's values, in its concrete fields' order: a column index or None; the extra columns: (name,
# column index); the converters: (column index, function)).
_Plan = tuple[list[int | None], list[tuple[str, int]], list[tuple[int, Callable[[Any], Any]]]]


@functools.lru_cache(maxsize=256)
def _plan(model: type[Model], columns: tuple[str, ...]) -> _Plan:
    fields = model._meta.concrete_fields
    by_column = {f.column: f for f in fields}
    position = {name: k for k, name in enumerate(columns)}
    if model._meta.pk is None or model._meta.pk.column not in position:
        raise ValueError("Raw query must include the primary key")  # as raw() says
    values = [position.get(str(f.column)) for f in fields]
    extras = [(name, k) for k, name in enumerate(columns) if name not in by_column]
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for k, name in enumerate(columns):
        field = by_column.get(name)
        if field is None:
            continue
        col = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
            converters.append((k, functools.partial(_convert, convert, col)))
    return values, extras, converters


def _convert(convert: Callable[..., Any], expression: Any, value: Any) -> Any:
    return convert(value, expression, connection)


def fetch_models(model: type[M], sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[M]:
    """What `list(model.objects.raw(sql, params))` returns: an instance of each row, with the columns that
    are not the model's fields set as attributes."""
    if connection.vendor != "postgresql":
        return list(model._default_manager.raw(sql, params))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return models_from_cursor(model, cursor)


def models_from_cursor(model: type[M], cursor: Any) -> list[M]:
    """fetch_models' instances from the rows of an executed statement (PostgreSQL)."""
    columns = _column_names(cursor)
    rows = cursor.fetchall()
    if not rows:
        return []
    order, extras, converters = _plan(model, columns)
    names = [f.attname for f in model._meta.concrete_fields]
    instances = []
    for row in rows:
        values = list(row)
        for k, convert in converters:
            values[k] = convert(values[k])
        # from_db with a value (or DEFERRED) for every concrete field, in their order.
        instance = model.from_db(connection.alias, names, [DEFERRED if k is None else values[k] for k in order])
        for name, k in extras:
            setattr(instance, name, values[k])
        instances.append(instance)
    return instances


def _column_names(cursor: Any) -> tuple[str, ...]:
    """The result's column names. From psycopg's result directly: cursor.description builds an object per
    column (type lookups included), about 0.1 ms for the assignment and item rows of a claim."""
    result = getattr(getattr(cursor, "cursor", cursor), "pgresult", None)
    if result is None:
        return tuple(column.name for column in cursor.description)
    return tuple(result.fname(k).decode() for k in range(result.nfields))
