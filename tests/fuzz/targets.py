"""In-process fuzz targets: each takes one ``bytes`` input and fails only on a real bug.

The invariant for every target is the same: the code under test either succeeds or raises one
of the error types its interface documents (the project's domain errors, which become proper
gRPC statuses). Anything else escaping (KeyError, IndexError, TypeError, OSError,
RecursionError...) raises :class:`~tests.fuzz.data.UndocumentedError`; a call slower than
:data:`SLOW_CALL_SECONDS` counts as a hang.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import DecodeError

from flightsql_srv.admission import Admission
from flightsql_srv.audit import Auditor
from flightsql_srv.auth.authenticator import Authenticator
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.auth.middleware import AuthMiddlewareFactory
from flightsql_srv.auth.passwords import hash_password
from flightsql_srv.catalog import CatalogError, load_catalog
from flightsql_srv.config import Settings
from flightsql_srv.engine import Engine
from flightsql_srv.errors import InvalidArgument, ResourceExhausted
from flightsql_srv.execution import Executor
from flightsql_srv.macros import (
    MacroConfigError,
    MacroContext,
    MacroError,
    TimeRange,
    expand,
    load_user_macros,
    parse_duration,
    parse_time,
)
from flightsql_srv.macros.lexer import tokenize
from flightsql_srv.protocol import InvalidCommand, flight_pb2, unpack_command
from flightsql_srv.request import RequestInfo
from flightsql_srv.server import FlightSqlServer
from flightsql_srv.sessions import SessionMiddlewareFactory, SessionOptions, apply_options
from flightsql_srv.statements import Statements
from flightsql_srv.tickets import PREPARED, TICKET, Signer
from flightsql_srv.workers.pool import EnginePool
from tests.fuzz.data import Input, UndocumentedError, toml_text

__all__ = ["TARGETS", "SLOW_CALL_SECONDS"]

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"fuzz-secret"
#: A single call taking longer than this is reported as a hang.
SLOW_CALL_SECONDS = 5.0
#: Header names the request parsers read.
HEADER_NAMES = (
    "query_range_begin",
    "query_range_end",
    "interval_ms",
    "max_data_points",
    "limit",
    "bound_scans",
    "x-client-type",
    "authorization",
    "cookie",
)
API_KEY = "fuzz-api-key"
PASSWORD = "fuzz-password"


@contextmanager
def allowed(*documented: type[BaseException], what: str) -> Iterator[None]:
    """Let ``documented`` errors through silently; anything else, or a hang, is a crash."""
    start = time.monotonic()
    try:
        yield
    except documented:
        pass
    except Exception as exc:
        raise UndocumentedError(f"{what}: {type(exc).__name__}: {exc}"[:2000]) from exc
    elapsed = time.monotonic() - start
    if elapsed > SLOW_CALL_SECONDS:
        raise UndocumentedError(f"{what}: took {elapsed:.1f} s (hang)")


# -- shared, built once --------------------------------------------------------------------


@cache
def _empty_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-empty-"))


@cache
def _engine() -> Engine:
    """A real engine over an empty catalog: literal queries and parameters still plan."""
    settings = Settings(catalog=_empty_dir(), ticket_secret=SECRET.decode(), metrics_port=-1)
    return Engine(settings, [])


@cache
def _statements() -> Statements:
    # Tokens only: nothing here runs a query, so the pool starts no engine worker.
    settings = Settings(catalog=_empty_dir(), ticket_secret=SECRET.decode(), metrics_port=-1)
    pool = EnginePool(settings, [], Admission(4, 4, 1.0), size=0)
    executor = Executor(pool, Auditor(), query_timeout=10.0)
    return Statements(_engine(), Signer([SECRET]), 600.0, executor)


@cache
def _user_macros() -> dict[str, Any]:
    return load_user_macros(ROOT / "macros")


@cache
def _auth_factory() -> AuthMiddlewareFactory:
    """Real API-key and password authentication (scrypt hashed once)."""
    config = parse_auth(
        {
            "api_keys": [
                {"name": "k", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(), "roles": []}
            ],
            "users": [{"name": "alice", "password_hash": hash_password(PASSWORD), "roles": []}],
        }
    )
    return AuthMiddlewareFactory(Authenticator(config, Signer([SECRET])))


@dataclass(frozen=True)
class _CallInfo:
    """What a middleware factory reads of pyarrow's ``CallInfo`` (not constructible here)."""

    method: flight.FlightMethod


# -- command decoding ------------------------------------------------------------------------


def command(data: bytes) -> None:
    """``unpack_command`` and the server's descriptor decoding of arbitrary bytes."""
    with allowed(InvalidCommand, what="unpack_command"):
        unpack_command(data)
    with allowed(InvalidArgument, what="FlightSqlServer._command"):
        FlightSqlServer._command(flight.FlightDescriptor.for_command(data))
    for message in (flight_pb2.CancelFlightInfoRequest, flight_pb2.SetSessionOptionsRequest):
        with allowed(DecodeError, what=f"{message.__name__}.ParseFromString"):
            message.FromString(data)


# -- tickets and prepared-statement handles ----------------------------------------------------


def mutate(token: bytes, inp: Input) -> bytes:
    """A genuine token with bytes flipped, cut, inserted or replaced, or left as it is."""
    kind = inp.byte() % 5
    at = (inp.byte() << 8 | inp.byte()) % (len(token) + 1)
    if kind == 0 and at < len(token):
        return token[:at] + bytes([token[at] ^ (inp.byte() | 1)]) + token[at + 1 :]
    if kind == 1:
        return token[:at]
    if kind == 2:
        return token[:at] + inp.bytes(16) + token[at:]
    if kind == 3:
        return inp.rest()
    return token


def ticket(data: bytes) -> None:
    """Forged tickets and handles: only UNAUTHENTICATED/PERMISSION_DENIED, and a changed token
    never verifies."""
    inp = Input(data)
    statements = _statements()
    purpose = str(inp.choice((TICKET, PREPARED)))
    genuine = statements.signer.sign(purpose, {"kind": "query", "id": "x", "sql": "select 1"})
    token = mutate(genuine, inp)
    rejected = (flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError)
    verified = False
    with allowed(*rejected, what="redeem"):
        if purpose == TICKET:
            statements.redeem_ticket(token, "")
        else:
            statements.redeem_handle(token, "", SessionOptions())
        verified = True
    if verified and token != genuine:
        raise UndocumentedError(f"a tampered {purpose} verified: {token!r}")
    with allowed(*rejected, what="redeem as another principal"):
        statements.redeem_ticket(token, "someone-else")
        raise UndocumentedError("a ticket was redeemed by another principal")


# -- DoPut parameters --------------------------------------------------------------------------

_SCALAR_TYPES: tuple[pa.DataType, ...] = (
    pa.null(),
    pa.bool_(),
    pa.int8(),
    pa.int64(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
    pa.string(),
    pa.large_string(),
    pa.binary(),
    pa.date32(),
    pa.timestamp("ns", "UTC"),
    pa.timestamp("s"),
    pa.duration("ms"),
    pa.decimal128(38, 10),
    pa.time64("us"),
    pa.string_view(),
)


def _type(inp: Input, depth: int = 0) -> pa.DataType:
    kind = inp.byte() % (8 if depth < 2 else 1)
    if kind == 1:
        return pa.list_(_type(inp, depth + 1))
    if kind == 2:
        return pa.struct([("a", _type(inp, depth + 1)), ("b", _type(inp, depth + 1))])
    if kind == 3:
        return pa.map_(pa.string(), _type(inp, depth + 1))
    if kind == 4:
        return pa.dictionary(pa.int32(), pa.string())
    return _SCALAR_TYPES[inp.byte() % len(_SCALAR_TYPES)]


def parameter_batch(inp: Input) -> pa.RecordBatch:
    """A record batch of 0-3 rows and 0-4 columns of scalar or nested types; names are
    positional (``0``, ``1``), named, or odd."""
    columns = inp.byte() % 5
    rows = (0, 1, 1, 1, 2, 3)[inp.byte() % 6]
    naming = inp.byte() % 3
    rng = inp.rng()
    arrays, names = [], []
    for i in range(columns):
        dtype = _type(inp)
        arrays.append(_random_array(dtype, rows, rng))
        names.append((str(i), f"p{i}", f"${i}\x00;drop")[naming])
    return pa.record_batch(arrays, names=names) if arrays else pa.record_batch({})


def _random_array(dtype: pa.DataType, rows: int, rng: Any) -> pa.Array:
    """Nulls plus whatever random scalars cast to ``dtype``; all-null when none do."""
    candidates = [None, 0, 1, -1, 2**62, "x';drop table t;--", b"\x00\xff", 1.5, True]
    values = [rng.choice(candidates) for _ in range(rows)]
    try:
        return pa.array(values, type=dtype)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.nulls(rows, type=dtype)


def parameters(data: bytes) -> None:
    """Plan and start a query with a random parameter batch bound to its placeholders."""
    inp = Input(data)
    sql = str(
        inp.choice(
            (
                "select $1 as a",
                "select $1 as a, $2 as b",
                "select $1 + 1 as a",
                "select * from (values (1), (2)) t(x) where x = $1",
                "select $a as a, $b as b",
                "select length($1) as n",
                "select $3 as c",
            )
        )
    )
    batch = parameter_batch(inp)
    with allowed(InvalidArgument, ResourceExhausted, what=f"plan {sql!r} with {batch.schema}"):
        _, batches = _engine().plan(sql, batch).execute()
        for _ in batches:
            pass


# -- macros and headers ------------------------------------------------------------------------

_MACRO_PIECES = (
    "$__timeFilter(",
    "$__timeFrom",
    "$__timeTo()",
    "$__timeGroup(",
    "$__timeGroupAlias(",
    "$__dateBin(",
    "$__interval",
    "$__interval_ms",
    "$__unixEpochFilter(",
    "$__unixEpochNanoFilter(",
    "$__timeRangeFrom(",
    "$__",
    "$__nope(",
    "(",
    ")",
    ",",
    "'",
    '"',
    "--",
    "/*",
    "*/",
    "\n",
    "time",
    "'5m'",
    "'now-1h'",
    "'2024-01-01T00:00:00Z'",
    "1",
    " ",
)


def macro_sql(inp: Input) -> str:
    """SQL built from macro-shaped pieces, then raw text (so the lexer sees both)."""
    # Up to 40 pieces: deep enough that nested $__timeFilter( (which doubles the text per
    # level) reaches the expansion budget.
    count = inp.byte() % 40
    user = sorted(_user_macros())
    pieces = [*_MACRO_PIECES, *(f"$__{name}(" for name in user)]
    return "".join(str(inp.choice(pieces)) for _ in range(count)) + inp.text(64)


def _context(inp: Input) -> MacroContext:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    kind = inp.byte() % 3
    if kind == 0:
        return MacroContext(now=now)
    time_range = TimeRange(now - timedelta(hours=6), now)
    interval = timedelta(milliseconds=inp.byte() * 1000) if kind == 2 else None
    return MacroContext(range=time_range, interval=interval, now=now)


def macros(data: bytes) -> None:
    """The macro lexer never fails; the expander fails only with MacroError."""
    inp = Input(data)
    context = _context(inp)
    sql = macro_sql(inp)
    with allowed(what="tokenize"):
        tokenize(sql)
    with allowed(MacroError, InvalidArgument, what=f"expand {sql!r}"):
        expand(sql, context, _user_macros())


def header_values(inp: Input) -> dict[str, list[str]]:
    """A pyarrow-style header map (lower-case name → list of values) of fuzzed values."""
    forms: tuple[object, ...] = (
        "now-6h",
        "now",
        "now/d",
        "2024-01-01T00:00:00Z",
        "2024-13-45T99:99:99+25:00",
        "1700000000000",
        "-1",
        "1e308",
        "nan",
        "9" * 40,
        "Bearer ",
        "Basic ",
        f"Bearer {API_KEY}",
        "Bearer fss1.",
        "arrow_flight_session=",
        "",
    )
    headers: dict[str, list[str]] = {}
    for _ in range(inp.byte() % 6):
        name = str(inp.choice(HEADER_NAMES))
        value = str(inp.choice(forms)) + inp.text(48)
        # pyarrow hands text headers to middleware as str (bytes only for "-bin" names).
        headers.setdefault(name, []).append(value)
    return headers


def headers(data: bytes) -> None:
    """Header parsers: range, interval, max points, limit, cookie and authorization."""
    inp = Input(data)
    raw = header_values(inp)
    with allowed(InvalidArgument, what=f"RequestInfo.from_headers {raw!r}"):
        RequestInfo.from_headers(raw)
    now = datetime(2024, 5, 1, tzinfo=UTC)
    for values in raw.values():
        text = values[0]
        with allowed(ValueError, what=f"parse_time {text!r}"):
            parse_time(text, now, round_up=bool(inp.byte() % 2))
        with allowed(ValueError, what=f"parse_duration {text!r}"):
            parse_duration(text)
    with allowed(what="session cookie"):
        SessionMiddlewareFactory(Signer([SECRET])).start_call(None, raw)
    method = inp.choice((flight.FlightMethod.HANDSHAKE, flight.FlightMethod.DO_GET))
    auth_errors = (flight.FlightUnauthenticatedError, flight.FlightUnavailableError)
    with allowed(*auth_errors, what=f"authorization {raw.get('authorization')!r}"):
        _auth_factory().start_call(_CallInfo(method), raw)  # type: ignore[arg-type]


def session_options(data: bytes) -> None:
    """SetSessionOptions bodies: bad values are reported per option, never raised."""
    inp = Input(data)
    request = flight_pb2.SetSessionOptionsRequest()
    for _ in range(inp.byte() % 4):
        name = str(inp.choice(("schema", "timezone", "catalog", "other", "")))
        value = request.session_options[name]
        kind = inp.byte() % 4
        if kind == 0:
            value.string_value = str(
                inp.choice(("UTC", "+02:00", "Europe/Paris", "../../etc/passwd", ""))
            ) + inp.text(300)
        elif kind == 1:
            value.int64_value = inp.byte()
        elif kind == 2:
            value.string_list_value.values.append(inp.text(16))
    with allowed(what="apply_options"):
        apply_options(SessionOptions(), request, "flightsql", {"demo"})


# -- configuration files ---------------------------------------------------------------------


def _catalog_table(inp: Input) -> dict[str, object]:
    keys: tuple[object, ...] = (
        "source",
        "format",
        "sql",
        "generator",
        "time_column",
        "description",
        "options",
        "partition_columns",
        "sort_by",
        "store",
        "bogus",
    )
    values: tuple[object, ...] = (
        "data.parquet",
        "*.csv",
        "/",
        "../../etc/passwd",
        "s3://bucket/key/",
        "https://example.invalid/x.parquet",
        "parquet",
        "csv",
        "delta",
        "select 1",
        "demo",
        {"header": True, "delimiter": ";;"},
        {"year": "int32"},
        {"version": -1},
        ["time", "host desc", "x asc nulls"],
        [],
        1,
        -1.5,
        True,
    )
    return {str(inp.choice(keys)): inp.choice(values) for _ in range(inp.byte() % 6)}


def catalog_document(inp: Input) -> str:
    """A catalog file: a schema name, tables with fuzzed keys/values, maybe stores."""
    doc: dict[str, object] = {}
    if inp.byte() % 2:
        doc["schema"] = inp.choice(("sales", "bad name", "", 1, "select"))
    doc["tables"] = {
        str(inp.choice(("t", "metrics", "1x", "a b", ""))) + str(i): _catalog_table(inp)
        for i in range(inp.byte() % 4)
    }
    if inp.byte() % 4 == 0:
        doc["stores"] = {"s": {"kind": inp.choice(("s3", "gcs", "http", "zzz")), "bucket": "b"}}
    return toml_text(doc) + inp.text(64)


def _write(directory: Path, name: str, text: str) -> None:
    for old in directory.glob("*.toml"):
        old.unlink()
    (directory / name).write_text(text, encoding="utf-8", errors="surrogateescape")


@cache
def _scratch(kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-"))


def catalog_toml(data: bytes) -> None:
    """Catalog loading fails only with CatalogError (one line naming the file and table)."""
    directory = _scratch("catalog")
    (directory / "data.parquet").touch()
    _write(directory, "s.toml", catalog_document(Input(data)))
    with allowed(CatalogError, what="load_catalog"):
        load_catalog(directory)


def macros_document(inp: Input) -> str:
    """A user-macro file with fuzzed names, params and templates."""
    table: dict[str, object] = {}
    for _ in range(inp.byte() % 4):
        name = str(inp.choice(("m", "timeFilter", "a_b", "1x", "", "m2")))
        spec: dict[str, object] = {"template": macro_sql(inp)}
        if inp.byte() % 2:
            spec["params"] = [str(inp.choice(("x", "col", "1", "from", "x"))) for _ in range(2)]
        if inp.byte() % 5 == 0:
            spec[str(inp.choice(("description", "bogus")))] = inp.choice(("d", 1, []))
        table[name] = spec
    return toml_text({"macros": table}) + inp.text(32)


def macros_toml(data: bytes) -> None:
    """User macro loading fails only with MacroConfigError; expanding the loaded macros (which
    may call each other) only with MacroError."""
    inp = Input(data)
    directory = _scratch("macros")
    _write(directory, "m.toml", macros_document(inp))
    loaded: dict[str, Any] = {}
    with allowed(MacroConfigError, what="load_user_macros"):
        loaded = load_user_macros(directory)
    now = datetime(2024, 5, 1, tzinfo=UTC)
    context = MacroContext(range=TimeRange(now - timedelta(hours=1), now), now=now)
    for name, macro in loaded.items():
        args = ", ".join(["time"] * len(macro.params))
        with allowed(MacroError, what=f"expand user macro {name}"):
            expand(f"select $__{name}({args})", context, loaded)


def auth_config(data: bytes) -> None:
    """``[auth]`` tables: ``parse_auth`` documents ValueError (the CLI shows it as one line)."""
    inp = Input(data)
    keys = ("api_keys", "users", "oidc", "roles", "session_ttl", "bogus")
    values: tuple[object, ...] = (
        [{"name": "k", "sha256": "00" * 32, "roles": ["r"]}],
        [{"name": "k", "sha256": "zz"}],
        [{"name": "u", "password_hash": "scrypt$x"}],
        [{"issuer": "https://example.invalid", "audience": "a"}],
        {"r": {"tables": ["*", "demo.logs", "bad pattern"]}},
        {"r": {"tables": "demo.*"}},
        {"r": []},
        -1,
        "3600",
        [1, None],
        {},
    )
    raw = {str(inp.choice(keys)): inp.choice(values) for _ in range(inp.byte() % 5)}
    with allowed(ValueError, what=f"parse_auth {raw!r}"):
        parse_auth(raw)


#: name → target, for the runner and the tests.
TARGETS: dict[str, Callable[[bytes], None]] = {
    "command": command,
    "ticket": ticket,
    "parameters": parameters,
    "macros": macros,
    "headers": headers,
    "session_options": session_options,
    "catalog_toml": catalog_toml,
    "macros_toml": macros_toml,
    "auth_config": auth_config,
}
