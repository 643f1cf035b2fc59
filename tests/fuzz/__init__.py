"""Fuzzing flightsql-srv: bad input must only ever produce the documented errors.

Targets live in :mod:`tests.fuzz.targets` (in-process parsers, verifiers, loaders) and
:mod:`tests.fuzz.network` (mutated Flight SQL requests against a real server). Each target is a
function of one ``bytes`` input, so the same code runs under atheris (coverage-guided, the long
run: ``python -m tests.fuzz <target> --runs N``) and under hypothesis (the bounded CI run in
``tests/fuzz/test_*.py``). Seeds and crash reproducers are in ``tests/fuzz/corpus/<target>/``.
"""
