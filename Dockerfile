# syntax=docker/dockerfile:1
#
# flightsql-srv container image.
#
#   docker build -t flightsql-srv .
#   docker run --rm -p 127.0.0.1:50051:50051 \
#     -e FLIGHTSQL_SRV_ALLOW_UNAUTHENTICATED=true flightsql-srv         # demo catalog, no auth
#
# The server listens on 0.0.0.0 inside the container, and it refuses a non-loopback address
# without authentication. So give it ONE of:
#   -e FLIGHTSQL_SRV_AUTH_FILE=/etc/flightsql-srv/auth/auth.toml   with that [auth] TOML mounted
#      (see deploy/auth.example.toml), or
#   -e FLIGHTSQL_SRV_ALLOW_UNAUTHENTICATED=true   for a local demo only: anyone who reaches
#      the port reads every table.
# Replicas behind one load balancer must share -e FLIGHTSQL_SRV_TICKET_SECRET=...
#
# Your own catalog and macros: mount them and point the settings at them, e.g.
#   -v "$PWD/catalog:/etc/flightsql-srv/catalog:ro" -e FLIGHTSQL_SRV_CATALOG=/etc/flightsql-srv/catalog
#   -v "$PWD/macros:/etc/flightsql-srv/macros:ro"   -e FLIGHTSQL_SRV_MACROS=/etc/flightsql-srv/macros
# Those variables are deliberately NOT set here: without them the server loads the demo catalog
# and example macros bundled in the wheel, so the bare image serves something. (No VOLUME
# instruction either: it would create empty anonymous volumes on every run for nothing.)
#
# With TLS (FLIGHTSQL_SRV_TLS_CERT / FLIGHTSQL_SRV_TLS_KEY) the health port speaks TLS too, and
# the HEALTHCHECK below (plaintext) fails: set FLIGHTSQL_SRV_HEALTH_PLAINTEXT=true (the health
# port only reveals SERVING / NOT_SERVING), or override it with `healthcheck --tls-ca ca.pem`.
#
# Give `docker stop` more than the shutdown grace (default 25 s), e.g. `docker stop -t 35` or
# `--stop-timeout 35`; Docker's default of 10 s would SIGKILL in-flight queries mid-drain.

# Pinned by tag (Python minor + Debian release). For byte-for-byte reproducible builds pin the
# digest too: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- stage 1: build the wheel (the project only; dependencies come from PyPI in stage 2) ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore keeps the context to what the build reads: pyproject.toml, README.md (the
# package's readme), flightsql_srv/, catalog/ and macros/ (force-included as _bundled/).
COPY . .
RUN pip wheel --no-deps --wheel-dir /dist .

# ---- stage 2: runtime ----
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Only the built wheel comes over from the build stage; pip resolves its runtime dependencies
# (no test/dev extras, no compilers). pip byte-compiles at install time, so nothing needs to
# write .pyc files later and the root filesystem can be read-only.
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 flightsql \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin flightsql \
    && mkdir -p /etc/flightsql-srv/catalog /etc/flightsql-srv/macros /etc/flightsql-srv/auth

# The server writes nothing but DataFusion spill files, into the system temp dir (/tmp) unless
# FLIGHTSQL_SRV_SPILL_DIR says otherwise.
WORKDIR /srv/flightsql-srv

ENV FLIGHTSQL_SRV_HOST=0.0.0.0 \
    FLIGHTSQL_SRV_PORT=50051 \
    FLIGHTSQL_SRV_HEALTH_PORT=50052 \
    FLIGHTSQL_SRV_METRICS_PORT=9464

# Flight SQL, gRPC health (grpc.health.v1), Prometheus /metrics.
EXPOSE 50051 50052 9464

# Numeric uid:gid so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup.
USER 10001:10001

# SERVING only when the engine answers a probe query; NOT_SERVING while draining. The start
# period covers generating the demo catalog (a few seconds). Shell form so a changed health
# port is followed; `exec` leaves no shell in between that could orphan the check on timeout.
# (Docker runs a HEALTHCHECK's CMD on its own: the ENTRYPOINT below is not prepended.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD exec flightsql-srv healthcheck --port "${FLIGHTSQL_SRV_HEALTH_PORT:-50052}" --timeout 3

# SIGTERM drains: health goes NOT_SERVING, new queries are refused, in-flight ones get
# --shutdown-grace seconds, then the process exits 0. No tini: the server is PID 1 and installs
# its own SIGTERM/SIGINT handlers (PID 1 has no default signal actions, which is why that
# matters), and it reaps what it starts: the engine workers are children of multiprocessing's
# fork server, which waits for them, and the server waits for the fork server (HEALTHCHECK
# processes are reaped by the container runtime, not by PID 1).
STOPSIGNAL SIGTERM

# Exec form: the server itself is PID 1 and receives the signal, not a shell. The program is
# the ENTRYPOINT and the subcommand the CMD, so arguments replace only the subcommand:
# `docker run IMAGE config-reference`, compose's `command:` and Kubernetes' `args: ["serve"]` all
# run `flightsql-srv <args>` (a Kubernetes `command:` would replace the ENTRYPOINT instead).
ENTRYPOINT ["flightsql-srv"]
CMD ["serve"]
