# One image for every Python service (simulator, auth, ingestor, recorder, gateway); compose picks
# the service with `command:`. Multi-stage: a builder installs the locked dependencies into a venv
# and builds the project's wheel; the runtime stage takes that venv (a layer that changes only
# with requirements.lock) and installs the wheel on top (a small layer per code change), on a
# fresh slim base, and runs as a non-root user. Works with the classic builder (docker-compose v1)
# and BuildKit alike.

FROM python:3.12-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src

FROM python:3.12-slim
# auth's AUTH_STATE_DIR (compose's auth-state volume), the recorder's RECORDER_DIR (compose's
# recording volume) and the mount points of compose's secrets volumes exist in the image, owned
# by the service user: a named volume mounted there starts with this owner and mode. The services'
# secrets and the recording are for this user alone (0700); Redis's secrets are read by the Redis
# image's own user, so that directory can be entered by anyone in Redis's container.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tickstream \
 && install -d -m 0700 -o 10001 -g 10001 /var/lib/tickstream/auth /run/tickstream/secrets \
      /run/tickstream/recorder-secrets /data/recording \
 && install -d -m 0755 -o 10001 -g 10001 /run/tickstream/redis-secrets
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir --disable-pip-version-check \
      /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000
# An empty working directory: pydantic-settings reads `.env` from here, and the image holds none.
WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001 8002 8006 8765
# Liveness on the service's own port; compose sets PORT for services other than the gateway.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["tickstream", "gateway", "--host", "0.0.0.0", "--port", "8000"]
