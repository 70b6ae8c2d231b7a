"""Per-message builders generated once, at import, from the protobuf descriptors.

For every message type reachable from the given roots this module compiles functions that turn
a message into the plain value `MessageToDict` gives for it (dicts, lists, str, float, bool, int;
int64 as str), ready for `orjson.dumps`. Two variants exist per type:

- the *fast* builder leaves doubles as Python floats, so NaN and the infinities stay floats;
  orjson writes those as `null`, which is how the caller notices them and switches to
- the *safe* builder, which writes NaN and the infinities as the strings protobuf's JSON
  mapping uses ("NaN", "Infinity", "-Infinity").

Generated source (rather than a loop over `ListFields()`) is what makes this fast: one
`attrgetter` call reads every non-oneof field, each field then costs a truth test, and a message
whose scalars are all non-zero is built as one dict display. Presence follows protobuf exactly:

- implicit-presence scalars are present when non-zero; a double holding -0.0 is present too
  (upb keeps it, so `MessageToDict` shows it);
- a singular message field is present when its rendering is non-empty (a field can only be
  non-zero inside a present sub-message); only for an empty rendering does `HasField` decide
  between `{}` and absence;
- oneof members are found with one `WhichOneof` call, so absent branches cost nothing;
- `google.protobuf.DoubleValue` and the other wrappers render as their bare value;
- repeated "flat" messages (scalars only, like `Quote` and `OHLC`) are built inline in a list
  comprehension over `map(attrgetter, items)`, with no Python call per element.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass

Builder = Callable[[Any], dict[str, Any]]

_SPECIAL_DOUBLES: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

_WRAPPERS: Final = frozenset(
    "google.protobuf." + name
    for name in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)
_INT64_TYPES: Final = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def json_double(value: float) -> float | str:
    """A double as protobuf's JSON mapping has it: finite numbers stay numbers."""
    if value - value == 0.0:
        return value
    return _SPECIAL_DOUBLES[repr(value)]


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class Builders:
    """The compiled builders, keyed by message full name, and their source (for debugging)."""

    fast: dict[str, Builder]
    safe: dict[str, Builder]
    source: str


def compile_builders(*roots: Any, limits: Mapping[str, int] | None = None) -> Builders:
    """Builders for `roots` (message descriptors) and every message type they reach.

    `limits` caps repeated fields (by field full name) at their first N elements, for
    projections such as full_d30 -> full (5 depth levels).
    """
    generator = _Generator(limits or {})
    for root in roots:
        generator.stem(root)
    source = "\n".join(generator.lines)
    exec(compile(source, "<shared.render generated builders>", "exec"), generator.namespace)
    names = generator.names.items()
    return Builders(
        fast={full: generator.namespace[f"f_{stem}"] for full, stem in names},
        safe={full: generator.namespace[f"s_{stem}"] for full, stem in names},
        source=source,
    )


def _is_plain_scalar(field: FieldDescriptor) -> bool:
    return (
        not field.is_repeated
        and field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE
        and not field.has_presence
    )


def _is_flat(message: Descriptor) -> bool:
    """Whether every field of `message` is a plain scalar (no messages, lists or oneofs)."""
    return all(_is_plain_scalar(f) and f.containing_oneof is None for f in message.fields)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _message_of(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def _wrapper_or_map_value(field: FieldDescriptor) -> FieldDescriptor:
    """The `value` field of a wrapper message or of a map entry."""
    return _message_of(field).fields_by_name["value"]


@dataclass(frozen=True)
class _Context:
    """What the code of one builder refers to."""

    safe: bool
    has: str  # name of the message class's unbound HasField
    which: str  # ... and WhichOneof


class _Generator:
    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = limits
        self.namespace: dict[str, Any] = {"copysign": math.copysign, "_dbl": json_double}
        self.namespace["_b64"] = _b64
        self.lines: list[str] = []
        self.names: dict[str, str] = {}  # message full name -> function stem
        self._constants: dict[int, str] = {}
        self._enums: dict[str, str] = {}

    def constant(self, value: object) -> str:
        """A global name the generated code can use for `value`."""
        key = id(value)
        if key not in self._constants:
            self._constants[key] = name = f"_c{len(self._constants)}"
            self.namespace[name] = value
        return self._constants[key]

    def stem(self, message: Descriptor) -> str:
        if message.full_name not in self.names:
            if message.full_name in _WRAPPERS:
                raise NotImplementedError("a wrapper is rendered by its parent")
            self.names[message.full_name] = f"m{len(self.names)}"
            for field in message.fields:  # dependencies first: the source reads top-down
                child = field.message_type
                if _is_map(field):
                    child = _wrapper_or_map_value(field).message_type
                if child is not None and child.full_name not in _WRAPPERS:
                    self.stem(child)
            cls = GetMessageClass(message)
            # Called unbound: `m.HasField` would first miss in upb's field-name lookup.
            has, which = self.constant(cls.HasField), self.constant(cls.WhichOneof)
            for safe in (False, True):
                self.lines.extend(self._function(message, _Context(safe, has, which)))
        return self.names[message.full_name]

    def builder(self, message: Descriptor, safe: bool) -> str:
        return ("s_" if safe else "f_") + self.stem(message)

    # --- expressions -------------------------------------------------------------------------

    def scalar(self, field: FieldDescriptor, var: str, safe: bool) -> str:
        """Expression rendering the (present) scalar in `var`."""
        cpp = field.cpp_type
        if cpp in _INT64_TYPES:
            return f"str({var})"
        if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
            return f"_dbl({var})" if safe else var
        if cpp == FieldDescriptor.CPPTYPE_FLOAT:
            # protobuf rounds floats to their shortest float32 repr; nothing here needs it.
            raise NotImplementedError(f"float fields are not supported: {field.full_name}")
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            assert field.enum_type is not None, field.full_name
            return f"{self.enum_names(field.enum_type)}.get({var}, {var})"
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            return f"bool({var})"
        if field.type == FieldDescriptor.TYPE_BYTES:
            return f"_b64({var})"
        return var  # int32 family and strings

    def enum_names(self, enum: EnumDescriptor) -> str:
        # An unknown number (open proto3 enum) stays a number, as in MessageToDict.
        if enum.full_name not in self._enums:
            table = {value.number: value.name for value in enum.values}
            self._enums[enum.full_name] = self.constant(table)
        return self._enums[enum.full_name]

    def value(self, field: FieldDescriptor, var: str, safe: bool) -> str:
        """Expression rendering one present value of `field` (a scalar or a message)."""
        if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            return self.scalar(field, var, safe)
        message = _message_of(field)
        if message.full_name in _WRAPPERS:
            return self.scalar(_wrapper_or_map_value(field), f"{var}.value", safe)
        return f"{self.builder(message, safe)}({var})"

    # --- statements --------------------------------------------------------------------------

    def _function(self, message: Descriptor, ctx: _Context) -> list[str]:
        plain = [f for f in message.fields if f.containing_oneof is None]
        body: list[str] = []
        if plain:
            getter = self.constant(attrgetter(*(f.name for f in plain)))
            # attrgetter returns a bare value for one name and a tuple for several.
            targets = ", ".join(f"v{i}" for i in range(len(plain)))
            body.append(f"    {targets} = {getter}(m)")
        scalars = [(i, f) for i, f in enumerate(plain) if _is_plain_scalar(f)]
        body.extend(self._scalars(scalars, ctx))
        for i, field in enumerate(plain):
            if not _is_plain_scalar(field):
                body.extend(self._field(field, f"v{i}", ctx))
        for oneof in message.oneofs:
            body.append(f"    w = {ctx.which}(m, {oneof.name!r})")
            keyword = "if"
            for field in oneof.fields:
                body.append(f"    {keyword} w == {field.name!r}:")
                expr = self.value(field, f"m.{field.name}", ctx.safe)
                body.append(f"        d[{field.json_name!r}] = {expr}")
                keyword = "elif"
        body.append("    return d")
        name = self.builder(message, ctx.safe)
        return [f"def {name}(m):", *body, ""]

    def _scalars(self, scalars: list[tuple[int, FieldDescriptor]], ctx: _Context) -> list[str]:
        """Lines that set `d` to the dict of the present ones among `scalars`."""
        if len(scalars) < 2:
            lines = ["    d = {}"]
            for i, field in scalars:
                lines.extend(self._field(field, f"v{i}", ctx))
            return lines
        # The common case, every scalar non-zero, is one test and one dict display.
        all_set = " and ".join(f"v{i}" for i, _ in scalars)
        display = ", ".join(
            f"{f.json_name!r}: {self.scalar(f, f'v{i}', ctx.safe)}" for i, f in scalars
        )
        lines = [f"    if {all_set}:", f"        d = {{{display}}}", "    else:", "        d = {}"]
        for i, field in scalars:
            lines.extend(self._field(field, f"v{i}", ctx, indent="        "))
        return lines

    def _field(
        self, field: FieldDescriptor, var: str, ctx: _Context, indent: str = "    "
    ) -> list[str]:
        """Lines that add `field`, whose value is in `var`, to `d` when it is present."""
        key = repr(field.json_name)
        then = indent + "    "
        if _is_map(field):
            entry = _message_of(field)
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            if key_field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
                key_expr = "('true' if k else 'false')"
            elif key_field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
                key_expr = "k"
            else:
                key_expr = "str(k)"
            value_expr = self.value(value_field, "x", ctx.safe)
            comprehension = f"{{{key_expr}: {value_expr} for k, x in {var}.items()}}"
            return [f"{indent}if {var}:", f"{then}d[{key}] = {comprehension}"]
        if field.is_repeated:
            return [f"{indent}if {var}:", f"{then}d[{key}] = {self._list(field, var, ctx.safe)}"]
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            has = f"{ctx.has}(m, {field.name!r})"
            expr = self.value(field, var, ctx.safe)
            if _message_of(field).full_name in _WRAPPERS:
                return [f"{indent}if {has}:", f"{then}d[{key}] = {expr}"]
            return [
                f"{indent}r = {expr}",
                f"{indent}if r or {has}:",
                f"{then}d[{key}] = r",
            ]
        if field.has_presence:  # proto3 `optional` scalars
            test = f"{ctx.has}(m, {field.name!r})"
        elif field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
            test = f"{var} or copysign(1.0, {var}) < 0.0"  # -0.0 is present
        else:
            test = var
        return [f"{indent}if {test}:", f"{then}d[{key}] = {self.scalar(field, var, ctx.safe)}"]

    def _list(self, field: FieldDescriptor, var: str, safe: bool) -> str:
        """Expression rendering the non-empty repeated field in `var`."""
        # A slice is one C call; iterating the container itself goes through the sequence
        # protocol, which ends by raising (and formatting) an IndexError every time.
        var = f"{var}[:{self.limits.get(field.full_name, '')}]"
        message = field.message_type
        if message is None or message.full_name in _WRAPPERS or not _is_flat(message):
            return f"[{self.value(field, 'x', safe)} for x in {var}]"
        fields = list(message.fields)
        names = [f"x{i}" for i in range(len(fields))]
        getter = self.constant(attrgetter(*(f.name for f in fields)))
        if len(fields) == 1:
            return f"[{self.from_values(message, safe)}(x0) for x0 in map({getter}, {var})]"
        all_set = " and ".join(names)
        display = ", ".join(
            f"{f.json_name!r}: {self.scalar(f, n, safe)}"
            for n, f in zip(names, fields, strict=True)
        )
        args = ", ".join(names)
        fallback = f"{self.from_values(message, safe)}({args})"
        return f"[{{{display}}} if {all_set} else {fallback} for {args} in map({getter}, {var})]"

    def from_values(self, message: Descriptor, safe: bool) -> str:
        """Name of a function building a flat message's dict from its field values."""
        name = ("sv_" if safe else "fv_") + self.stem(message)
        if name not in self.namespace:
            ctx = _Context(safe, has="", which="")  # flat messages need neither
            fields = list(message.fields)
            lines = [f"def {name}({', '.join(f'v{i}' for i in range(len(fields)))}):", "    d = {}"]
            for i, field in enumerate(fields):
                lines.extend(self._field(field, f"v{i}", ctx))
            self.lines.extend([*lines, "    return d", ""])
            self.namespace[name] = None  # defined when the source runs
        return name
