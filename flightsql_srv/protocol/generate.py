"""Regenerate the committed protobuf modules of :mod:`flightsql_srv.protocol`.

Run ``python -m flightsql_srv.protocol.generate`` after editing ``FlightSql.proto``
or ``Flight.proto``: it rewrites ``FlightSql_pb2.py``/``.pyi`` and
``Flight_pb2.py``/``.pyi`` next to them with the protoc bundled in grpcio-tools.

:func:`descriptor_set` compiles the ``.proto`` files to a ``FileDescriptorSet``
in a scratch directory without touching the package, and :func:`compiled_files`
turns that into one ``FileDescriptorProto`` per file in the form embedded in
generated Python code. The staleness test compares the two.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

__all__ = [
    "PROTO_DIR",
    "PROTO_FILES",
    "ProtocError",
    "compiled_files",
    "descriptor_set",
    "generate",
    "main",
    "well_known_include_dir",
]

PROTO_DIR = Path(__file__).resolve().parent
"""Directory holding the ``.proto`` sources and the generated modules."""

PROTO_FILES: tuple[str, ...] = ("FlightSql.proto", "Flight.proto")
"""The ``.proto`` files of the package, relative to :data:`PROTO_DIR`."""


class ProtocError(RuntimeError):
    """protoc exited non-zero (its diagnostics went to stderr)."""


def well_known_include_dir() -> Path:
    """Return the directory with ``google/protobuf/*.proto`` shipped by grpcio-tools."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def _run_protoc(proto_dir: Path, outputs: Sequence[str], files: Sequence[str]) -> None:
    argv = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={well_known_include_dir()}",
        *outputs,
        *files,
    ]
    status = int(protoc.main(argv))
    if status != 0:
        raise ProtocError(f"protoc failed with exit status {status}: {' '.join(argv[1:])}")


def generate(proto_dir: Path = PROTO_DIR, files: Sequence[str] = PROTO_FILES) -> list[Path]:
    """Write ``*_pb2.py`` and ``*_pb2.pyi`` for ``files`` into ``proto_dir``.

    Returns the paths of the generated modules.
    """
    _run_protoc(proto_dir, [f"--python_out={proto_dir}", f"--pyi_out={proto_dir}"], files)
    stems = [Path(name).stem for name in files]
    return [proto_dir / f"{stem}_pb2{suffix}" for stem in stems for suffix in (".py", ".pyi")]


def descriptor_set(
    proto_dir: Path = PROTO_DIR,
    files: Sequence[str] = PROTO_FILES,
    *,
    work_dir: Path | None = None,
) -> bytes:
    """Compile ``files`` and return the serialized ``FileDescriptorSet``.

    Imports (``google/protobuf/...``) are not included. The set is written to
    ``work_dir`` if given, otherwise to a temporary directory that is removed.
    """
    if work_dir is not None:
        return _descriptor_set_in(proto_dir, files, work_dir)
    with tempfile.TemporaryDirectory(prefix="flightsql-protoc-") as tmp:
        return _descriptor_set_in(proto_dir, files, Path(tmp))


def _descriptor_set_in(proto_dir: Path, files: Sequence[str], work_dir: Path) -> bytes:
    out = work_dir / "descriptor_set.pb"
    _run_protoc(proto_dir, [f"--descriptor_set_out={out}"], files)
    return out.read_bytes()


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for extension in message.extension:
        extension.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)


def compiled_files(data: bytes) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Parse a ``FileDescriptorSet`` into ``{file name: FileDescriptorProto}``.

    protoc's descriptor sets carry ``json_name`` on every field, while the Python
    generator leaves it out of the descriptor it embeds, so it is dropped here to
    make the result comparable with ``<module>.DESCRIPTOR.serialized_pb``.
    """
    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    result: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for file in fds.file:
        for message in file.message_type:
            _drop_json_names(message)
        for extension in file.extension:
            extension.ClearField("json_name")
        result[file.name] = file
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: regenerate the modules and list them."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        print("usage: python -m flightsql_srv.protocol.generate", file=sys.stderr)
        return 2
    try:
        written = generate()
    except ProtocError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
