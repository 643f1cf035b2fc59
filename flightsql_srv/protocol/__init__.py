"""Flight SQL wire protocol: generated protobuf modules and ``Any`` helpers.

``sql_pb2`` holds every message and enum of the Arrow Flight SQL specification
(package ``arrow.flight.protocol.sql``) and ``flight_pb2`` the Arrow Flight
messages the server uses (package ``arrow.flight.protocol``). Both are generated
from the ``.proto`` files in this directory; regenerate them with
``python -m flightsql_srv.protocol.generate``.

Flight SQL commands travel as a serialized ``google.protobuf.Any`` in
``FlightDescriptor.cmd``, ``Ticket.ticket`` and ``Action.body``: :func:`pack`
builds one, :func:`unpack_command` reads one back.
"""

from __future__ import annotations

from typing import Final

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from . import Flight_pb2 as flight_pb2
from . import FlightSql_pb2 as sql_pb2

__all__ = [
    "SQL_PACKAGE",
    "TYPE_URL_PREFIX",
    "InvalidCommand",
    "flight_pb2",
    "pack",
    "sql_pb2",
    "unpack_command",
]

SQL_PACKAGE: Final = "arrow.flight.protocol.sql"
"""Protobuf package of the Flight SQL messages."""

TYPE_URL_PREFIX: Final = "type.googleapis.com/"
"""Prefix of the ``Any.type_url`` written by :func:`pack`."""


class InvalidCommand(ValueError):
    """A request body is not a Flight SQL command this server understands."""


def _sql_messages() -> dict[str, type[Message]]:
    """Map full name -> class for every top-level message of ``sql_pb2``."""
    classes: dict[str, type[Message]] = {}
    for name, descriptor in sql_pb2.DESCRIPTOR.message_types_by_name.items():
        cls: type[Message] = getattr(sql_pb2, name)
        classes[descriptor.full_name] = cls
    return classes


_SQL_MESSAGES: Final = _sql_messages()


def pack(message: Message) -> bytes:
    """Serialize ``message`` inside a ``google.protobuf.Any``.

    The type URL is ``type.googleapis.com/arrow.flight.protocol.sql.<Name>``.
    Raises :class:`TypeError` for a message that is not a Flight SQL message.
    """
    full_name = message.DESCRIPTOR.full_name
    if _SQL_MESSAGES.get(full_name) is not type(message):
        raise TypeError(f"pack() takes a {SQL_PACKAGE} message, not {full_name}")
    wrapper = any_pb2.Any(type_url=TYPE_URL_PREFIX + full_name, value=message.SerializeToString())
    data: bytes = wrapper.SerializeToString()
    return data


def unpack_command(data: bytes) -> Message:
    """Parse a serialized ``Any`` holding a Flight SQL message and return the message.

    The message type is the full name after the last ``/`` of the type URL, and
    must be a top-level message of package ``arrow.flight.protocol.sql``.
    Raises :class:`InvalidCommand` if ``data`` is not an ``Any``, names another
    type, or its value does not parse as that type.
    """
    wrapper = any_pb2.Any()
    try:
        wrapper.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidCommand(f"request is not a serialized google.protobuf.Any: {exc}") from exc
    type_url = wrapper.type_url
    if not type_url:
        raise InvalidCommand("request is not a serialized google.protobuf.Any: it has no type_url")
    cls = _SQL_MESSAGES.get(type_url.rpartition("/")[2])
    if cls is None:
        raise InvalidCommand(
            f"unknown Flight SQL command {type_url!r}: this server speaks {SQL_PACKAGE}"
        )
    command = cls()
    try:
        command.ParseFromString(wrapper.value)
    except DecodeError as exc:
        raise InvalidCommand(
            f"malformed {cls.DESCRIPTOR.name} in Flight SQL command {type_url!r}: {exc}"
        ) from exc
    return command
