# syntax=docker/dockerfile:1.7
# Shelfwise: one image, the command picks the process (docs/deploy.md, "Containers"):
#   docker run IMAGE serve     the API (add `--role live` for a live-only instance)
#   docker run IMAGE worker    jobs, cron, the outbox relay
#   docker run IMAGE migrate   alembic upgrade head, then exit
# Settings come from the environment and from files in /run/secrets (config.py); the image
# defaults to production, which refuses development secrets.
#
# Build: docker build -t shelfwise:$(git rev-parse --short HEAD) .
# Pin the bases by digest when releasing (e.g. python:3.11-slim-bookworm@sha256:...).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# uv at the version that wrote uv.lock; only its binary is copied into the build stage.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---------------------------------------------------------------------------------------
# build: resolve nothing, install exactly uv.lock into /app/.venv.
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled here (the runtime filesystem is read-only); uv's cache is a cache
# mount, another filesystem, so files are copied out of it rather than hard-linked; the
# base image's Python is used, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md alembic.ini ./
COPY migrations ./migrations
COPY src ./src
# The project itself stays an editable install (a .pth pointing at /app/src): migrate.py
# finds migrations/ next to src/, so both keep their repository layout under /app.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
 && python -m compileall -q /app/src

# ---------------------------------------------------------------------------------------
# runtime: the same base, no uv, no compilers, no package caches.
FROM ${PYTHON_IMAGE} AS runtime
# tini is PID 1: it forwards SIGTERM/SIGINT to shelfwise and reaps zombies. Python as PID 1
# would ignore any signal it has no handler for (migrate has none) and reap nothing.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shelfwise \
 && useradd --system --no-log-init --uid 10001 --gid shelfwise --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin shelfwise \
 && install -d -o shelfwise -g shelfwise -m 0750 /data

# HOME=/tmp: a library that caches under ~ writes to the one writable place, not to a
# read-only root filesystem.
ENV PATH=/app/.venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHELFWISE_ENV=production \
    SHELFWISE_HOST=0.0.0.0 \
    SHELFWISE_PORT=8000 \
    SHELFWISE_DATA_DIR=/data \
    SHELFWISE_LOG_JSON=true

WORKDIR /app
# Owned by root: the app user reads the code and the venv but cannot change them.
COPY --from=build /app /app
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/shelfwise-healthcheck

# Numeric, so Kubernetes' runAsNonRoot can verify it. The process writes only to /tmp and
# to the data volume (product images, CSV uploads: shared by API and workers).
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# The API's /healthz by default; a worker sets SHELFWISE_HEALTHCHECK_URL to its metrics
# port (compose.yaml). Kubernetes ignores HEALTHCHECK and uses its own probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["shelfwise-healthcheck"]

ENTRYPOINT ["tini", "--", "shelfwise"]
CMD ["serve"]
