"""Field rules as data, and the readers compiled from them.

Each map or array of the contract has one table: its fields in the order the SPEC checks them, and
for each field the rules its value must meet, in order, each with the reason err_msg gives when it
does not. A decoder reads a map only through the reader compiled from its table, so a rule lives in
one place, the table, and a reader cannot disagree with it.

A reader is straight-line Python generated from its table, as dataclasses writes `__init__`: per
field one lookup and the rules' tests in line. A loop calling a predicate per field would cost a
third more per bill line, which is why a rule's test is an expression rather than a function.
"""

from __future__ import annotations

import dataclasses
import keyword
import linecache
from collections.abc import Callable, Collection, Mapping
from typing import Any

from protocol import limits
from protocol._fields import is_digits
from protocol.errors import ErrCode, ProtocolError


@dataclasses.dataclass(frozen=True)
class Rule:
    """One condition on a field's value.

    Attributes:
        test: a Python expression over the value `v` and the values of earlier fields of the same
            table, by their names; true when the value is right.
        why: the reason err_msg gives when `test` is false. It is an f-string body, so it may show
            earlier fields in braces.
        uses: names the expressions use that are not builtins (functions, constants).
    """

    test: str
    why: str
    uses: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a table: its wire name and its rules, checked in order.

    Attributes:
        name: the key (or, in a positional table, the name of the position).
        rules: what the value must meet, the first failing rule answering.
        optional: an expression over earlier fields; while true, an absent or nil value reads as
            None without a rule being asked. "False": always required.
        empty_is_none: an empty string that passes the rules reads as None.
    """

    name: str
    rules: tuple[Rule, ...]
    optional: str = "False"
    empty_is_none: bool = False


@dataclasses.dataclass(frozen=True)
class Table:
    """The fields of one map (or array) of the contract, in the order the SPEC checks them.

    Attributes:
        name: names the compiled reader.
        code: the ErrCode every failure answers.
        message: err_msg of a failure, a format over {path} (given to the reader), {name} (the
            field's) and {why} (the rule's, or "missing").
        fields: the fields in checking order.
        nil_is_missing: a nil value counts as absent ("missing") rather than being judged by the
            rules (which then refuse it with their reason).
        positional: the value is an array whose length the caller checked; fields are positions.
        make: called with the values in field order; None returns them as a tuple.
    """

    name: str
    code: ErrCode
    message: str
    fields: tuple[Field, ...]
    nil_is_missing: bool = True
    positional: bool = False
    make: Callable[..., Any] | None = None


# A sentinel for "no such key", where nil is a value the rules judge.
_ABSENT = object()


def compile_reader(table: Table) -> Callable[[Any, str], Any]:
    """Compile `table` into `read(raw, path)`, which checks each field in order and returns the values.

    Args:
        table: the table; its field names must be identifiers (they name the reader's locals).
    Returns:
        `read(raw, path)`: raw is a map (or, for a positional table, a list of the right length);
        it returns `table.make(*values)`, or the values as a tuple, in field order. An absent or
        nil optional field reads as None; so does an empty string where `empty_is_none`.
        It raises ProtocolError(table.code, table.message) for the first field that fails.
        The reader's `source` attribute holds its Python text.
    """
    names = [field.name for field in table.fields]
    assert all(name.isidentifier() and not keyword.iskeyword(name) for name in names), names
    assert len(set(names)) == len(names), names
    lines = [f"def read_{table.name}(raw, path):"]
    if not table.positional:
        lines.append("    get = raw.get")
    for position, field in enumerate(table.fields):
        lines += _field_source(table, position, field)
    values = ", ".join(names)
    lines.append(f"    return make({values})" if table.make is not None else f"    return ({values},)")
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {"ProtocolError": ProtocolError, "code": table.code, "make": table.make,
                                 "ABSENT": _ABSENT}
    # A rule's names must not hide the reader's own, a field (a local) or another rule's.
    reserved = {*namespace, *names}
    for rule in (rule for field in table.fields for rule in field.rules):
        for name, value in rule.uses.items():
            assert name not in reserved and namespace.get(name, value) is value, (table.name, name)
            namespace[name] = value
    filename = f"<reader of {table.name}>"
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - text written here, from the table
    # Tracebacks through a reader then show its lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    reader = namespace[f"read_{table.name}"]
    reader.source = source
    return reader


def _field_source(table: Table, position: int, field: Field) -> list[str]:
    """The reader's lines for one field: read it, answer absence, then each rule in order."""
    if table.positional:
        lines, absent, missing = [f"    v = raw[{position}]"], None, None
    elif table.nil_is_missing:
        lines, absent, missing = [f"    v = get({field.name!r})"], "v is None", "v is None"
    else:
        lines, absent, missing = [f"    v = get({field.name!r}, ABSENT)"], "(v is None or v is ABSENT)", "v is ABSENT"
    indent = "    "
    if field.optional != "False":
        assert absent is not None, "a positional field is never absent"
        when = absent if field.optional == "True" else f"{absent} and ({field.optional})"
        lines += [f"    if {when}:", f"        {field.name} = None", "    else:"]
        indent = "        "
    if missing is not None and field.optional != "True":
        lines += [f"{indent}if {missing}:", f"{indent}    raise {_error(table, field, 'missing')}"]
    for rule in field.rules:
        lines += [f"{indent}if not ({rule.test}):", f"{indent}    raise {_error(table, field, rule.why)}"]
    lines.append(f"{indent}{field.name} = v or None" if field.empty_is_none else f"{indent}{field.name} = v")
    return lines


def _error(table: Table, field: Field, why: str) -> str:
    # The message is an f-string, so that {path} and anything a rule's reason shows are filled in
    # only when the rule fails.
    message = table.message.format(path="{path}", name=field.name, why=why)
    return f"ProtocolError(code, f{message!r})"


# -- rules shared by the tables ---------------------------------------------------------------------

INTEGER = Rule("type(v) is int", "not an integer")


def text(low: int, high: int, why: str | None = None) -> Rule:
    """A str of `low`..`high` characters."""
    if low == high:
        return Rule(f"isinstance(v, str) and len(v) == {low}", why or f"not a string of {low} chars")
    return Rule(f"isinstance(v, str) and {low} <= len(v) <= {high}", why or f"not a string of {low}..{high} chars")


def one_of(values: Collection[str], why: str) -> Rule:
    """A str among `values`."""
    literal = "{" + ", ".join(repr(value) for value in sorted(values)) + "}"
    return Rule(f"isinstance(v, str) and v in {literal}", why)


def digits(count: int) -> Rule:
    """A str of exactly `count` ASCII digits."""
    return Rule(f"isinstance(v, str) and is_digits(v, {count})", f"not {count} digits", uses={"is_digits": is_digits})


def within(low: int, high: int) -> Rule:
    """A number from `low` to `high` inclusive (after INTEGER, so an int)."""
    return Rule(f"{low} <= v <= {high}", f"outside {low}..{high}")


def integer(low: int, high: int) -> tuple[Rule, ...]:
    """An int (never a bool) from `low` to `high`: two rules, two reasons."""
    return (INTEGER, within(low, high))


def binary(size: int) -> Rule:
    """A bin of exactly `size` bytes."""
    return Rule(f"isinstance(v, bytes) and len(v) == {size}", f"not bin({size})")


ID = text(1, limits.ID_CHARS_MAX)
STRING = Rule("isinstance(v, str)", "not a string")
AMOUNT = integer(0, limits.AMOUNT_FEN_MAX)
BOOL = Rule("isinstance(v, bool)", "not a bool")
MAP = Rule("isinstance(v, dict)", "not a map")
