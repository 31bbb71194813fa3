# inferq: one image for every role, chosen by command (the entrypoint is `inferq`):
#   serve [--workers N]   the HTTP API (default)         worker --all   inference workers
#   tasks                 webhook deliveries, reconciler  migrate        upgrade the Postgres schema
# Core dependencies only: no conversion (scikit-learn, skl2onnx), embedded-services or test extras, so
# INFERQ_REDIS_URL and INFERQ_DATABASE_URL must be set. Build: `docker build -t inferq:0.1.0 .`
#
# Both stages use the same base: the venv's interpreter is a symlink to the base image's python.
# NOTE: the base is pinned by tag. For reproducible production builds pin it by digest as well
# (`FROM python:3.11-slim-bookworm@sha256:<digest>`, from `docker buildx imagetools inspect`) and let a
# bot bump the digest, so security fixes still arrive.

FROM python:3.11-slim-bookworm AS builder
WORKDIR /src
# Every core dependency ships binary wheels for CPython 3.11 (--only-binary): no compiler, even here.
COPY pyproject.toml README.md ./
COPY inferq ./inferq
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --only-binary=:all: /wheels/inferq-*.whl
# Files nothing in inferq reads (≈ 45 MB): numpy's and onnx's own test suites and data, and the Swagger
# editor and source maps (the docs page at /schema uses only swagger-ui's bundle, preset and css).
RUN find /opt/venv/lib/python3.11/site-packages/numpy -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3.11/site-packages/onnx/backend/test/data \
              /opt/venv/lib/python3.11/site-packages/swagger_ui/static/*.map \
              /opt/venv/lib/python3.11/site-packages/swagger_ui/static/swagger-editor*

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="inferq" \
      org.opencontainers.image.description="Queue-first inference backend: Redis Streams, ONNX Runtime, Postgres" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, numeric, non-root uid/gid: Kubernetes' runAsNonRoot can verify it, volumes can be chowned to it.
RUN groupadd --system --gid 10001 inferq \
    && useradd --system --uid 10001 --gid inferq --home-dir /var/lib/inferq --no-create-home \
               --shell /usr/sbin/nologin inferq \
    && mkdir -p /var/lib/inferq/models \
    && chown -R inferq:inferq /var/lib/inferq
COPY --from=builder /opt/venv /opt/venv
# INFERQ_STATE_DIR is only read by embedded services (absent here); INFERQ_MODEL_ROOT is each process's
# sha-checked model cache, writable by the inferq user (mount a volume there to keep it across restarts).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INFERQ_HOST=0.0.0.0 \
    INFERQ_PORT=8000 \
    INFERQ_STATE_DIR=/var/lib/inferq \
    INFERQ_MODEL_ROOT=/var/lib/inferq/models
USER 10001:10001
WORKDIR /var/lib/inferq
EXPOSE 8000
# The API's liveness, without curl. Only `serve` listens: worker, tasks and migrate containers disable it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INFERQ_PORT', '8000') + '/health/live', timeout=4)"]
ENTRYPOINT ["inferq"]
CMD ["serve"]
