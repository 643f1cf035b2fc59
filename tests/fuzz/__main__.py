"""Long fuzzing runs: ``python -m tests.fuzz <target> --runs N``.

With atheris installed (``pip install -e '.[fuzz]'``) the run is coverage-guided: the
``flightsql_srv`` package is instrumented, libFuzzer mutates the seeds of
``tests/fuzz/corpus/<target>/`` (new interesting inputs go to a scratch directory) and writes
any crashing input there as ``crash-<sha1>``. libFuzzer's last lines report the executions
(``Done N runs in S second(s)``). Without atheris, or with ``--engine random``, seeds are
mutated at random and each crash is saved the same way.

Targets: the names of :data:`tests.fuzz.targets.TARGETS`, plus ``network`` (mutated Flight SQL
requests against a real in-process server; its thread and fd counts are checked at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
#: The network run checks the server's resources this often (executions).
CHECK_EVERY = 2000
#: Growth tolerated from gRPC's dynamic thread pool and connection churn; a leak per request
#: would exceed it within one check period.
THREAD_SLACK = 16
FD_SLACK = 32


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("target", help="a target name, or 'network'")
    parser.add_argument("--runs", type=int, default=100_000, help="executions (default 100000)")
    parser.add_argument("--max-len", type=int, default=1024, help="longest input in bytes")
    parser.add_argument(
        "--engine",
        choices=["atheris", "random"],
        default="atheris",
        help="coverage-guided atheris (default) or random mutation of the seeds",
    )
    parser.add_argument("--timeout", type=int, default=30, help="seconds per input before a hang")
    return parser.parse_args(argv)


def _import_targets(engine: str) -> dict[str, Callable[[bytes], None]]:
    """The targets, with ``flightsql_srv`` instrumented for coverage when atheris runs."""
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["flightsql_srv"]):
            from tests.fuzz import network, targets
    else:
        from tests.fuzz import network, targets
    return {**targets.TARGETS, "network": network.NetworkFuzzer.run}  # type: ignore[dict-item]


@contextlib.contextmanager
def _bound(name: str, target: Callable[..., None]) -> Iterator[Callable[[bytes], None]]:
    """A one-argument target. For ``network`` it is bound to a running server and, every
    :data:`CHECK_EVERY` executions, checks that the server's thread and fd counts have not
    grown and that it still answers SELECT 1 (atheris ends the process without returning)."""
    if name != "network":
        yield target
        return
    from tests.fuzz.data import UndocumentedError
    from tests.fuzz.network import answers_select_one, network_fuzzer, resources

    with network_fuzzer() as fuzzer:
        for data in (b"", b"\x00" * 64, b"\x05" * 64):  # warm the server's thread pools up
            fuzzer.run(data)
        before = resources()

        def checked(data: bytes) -> None:
            fuzzer.run(data)
            if fuzzer.executions % CHECK_EVERY:
                return
            now = resources()
            print(f"#{fuzzer.executions}: threads/fds {now} (after warm-up {before})")
            if now[0] > before[0] + THREAD_SLACK or now[1] > before[1] + FD_SLACK:
                raise UndocumentedError(f"threads/fds grew from {before} to {now}")
            if not answers_select_one(fuzzer):
                raise UndocumentedError("the server no longer answers SELECT 1")

        yield checked


def _save_crash(name: str, data: bytes) -> Path:
    path = CORPUS / name / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def _run_atheris(name: str, target: Callable[[bytes], None], args: argparse.Namespace) -> None:
    import atheris

    seeds = CORPUS / name
    scratch = tempfile.mkdtemp(prefix=f"fuzz-{name}-")  # libFuzzer writes new units here
    argv = [
        sys.argv[0],
        f"-runs={args.runs}",
        f"-max_len={args.max_len}",
        f"-timeout={args.timeout}",
        f"-artifact_prefix={seeds}/",
        "-print_final_stats=1",
        scratch,
        str(seeds),
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()  # exits the process when the runs are done (libFuzzer's exit)


def _mutated(seed: bytes, rng: random.Random, max_len: int) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        at = rng.randint(0, len(data))
        if op == 0 and data and at < len(data):
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 2:
            del data[at : at + rng.randint(1, 16)]
        else:
            data[at:] = rng.randbytes(rng.randint(0, 64))
    return bytes(data[:max_len])


def _run_random(name: str, target: Callable[[bytes], None], args: argparse.Namespace) -> None:
    seeds = [p.read_bytes() for p in sorted((CORPUS / name).iterdir())] or [b""]
    rng = random.Random(0)
    crashes, start = 0, time.monotonic()
    for run in range(args.runs):
        data = _mutated(rng.choice(seeds), rng, args.max_len)
        try:
            target(data)
        except AssertionError as exc:
            crashes += 1
            print(f"run {run}: {exc}\n  saved {_save_crash(name, data)}")
    elapsed = time.monotonic() - start
    print(f"Done {args.runs} runs in {elapsed:.0f} second(s); {crashes} crash(es)")
    if crashes:
        raise SystemExit(1)


def main(argv: list[str]) -> None:
    args = _args(argv)
    engine = args.engine
    if engine == "atheris":
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: falling back to --engine random", file=sys.stderr)
            engine = "random"
    targets = _import_targets(engine)
    if args.target not in targets:
        raise SystemExit(f"unknown target {args.target!r}; known: {', '.join(sorted(targets))}")
    with _bound(args.target, targets[args.target]) as target:
        if engine == "atheris":
            _run_atheris(args.target, target, args)
        else:
            _run_random(args.target, target, args)


if __name__ == "__main__":
    main(sys.argv[1:])
