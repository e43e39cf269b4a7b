# cachecloak as a sidecar container (see "Running as a sidecar" in README.md).
#
#   docker build -t cachecloak .
#   docker run --read-only --tmpfs /tmp --network container:my-app \
#     -v $PWD/cachecloak.yaml:/etc/cachecloak/cachecloak.yaml:ro \
#     -v $PWD/secrets:/run/secrets/cachecloak:ro \
#     -e CACHECLOAK_SECRET_PROVIDER=dir:///run/secrets/cachecloak \
#     cachecloak run --workers 2
#
# - The configuration is read from /etc/cachecloak/cachecloak.yaml (CACHECLOAK_CONFIG);
#   secrets from a mounted directory (dir:// provider: Kubernetes secret volumes, Docker
#   secrets, Vault Agent files), never from the image or the environment.
# - The HEALTHCHECK asks the admin endpoint's /healthz, so the configuration needs an
#   `admin:` section on 127.0.0.1:9121 (or set CACHECLOAK_HEALTH_URL).
# - Runs as uid/gid 10001, needs no capability and no writable root filesystem; with
#   --workers, /tmp must be writable (a tmpfs) for the workers' private admin sockets.
# - SIGTERM drains for up to 10 s: give `docker stop` / compose more (stop_grace_period).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The proxy's own C part (proxy/_native.c) is compiled here against OpenSSL's headers;
# the final stage needs only libssl3, which the Python image already has.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY proxy ./proxy
# Every dependency (hiredis, uvloop, cryptography, pydantic-core) has binary wheels for
# linux/amd64 and linux/arm64: --only-binary fails the build rather than compiling them.
# The import check fails the build if the C part did not compile (it is optional for
# pip).  The virtual environment is what the final stage copies; pip and setuptools are
# not needed at run time.
RUN python -m venv /opt/cachecloak \
 && /opt/cachecloak/bin/pip install --only-binary=:all: . \
 && /opt/cachecloak/bin/python -c "import proxy._native" \
 && /opt/cachecloak/bin/pip uninstall --yes pip setuptools \
 && /opt/cachecloak/bin/cachecloak --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cachecloak" \
      org.opencontainers.image.description="Redis-protocol sidecar that HMAC-hashes keys and AES-256-GCM-encrypts values" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 cachecloak \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin cachecloak \
 && mkdir -p /etc/cachecloak /run/cachecloak \
 && chown 10001:10001 /run/cachecloak
# One layer: the installed virtual environment only (no wheels, no build tools).
COPY --from=build /opt/cachecloak /opt/cachecloak
ENV PATH=/opt/cachecloak/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CACHECLOAK_CONFIG=/etc/cachecloak/cachecloak.yaml \
    CACHECLOAK_HEALTH_URL=http://127.0.0.1:9121/healthz
USER 10001:10001
WORKDIR /run/cachecloak
EXPOSE 6379 9121
STOPSIGNAL SIGTERM
# No curl in the image: Python's urllib, bypassing any HTTP proxy from the environment.
# Non-zero when the endpoint does not answer 200 (urlopen raises on 4xx/5xx).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['CACHECLOAK_HEALTH_URL'], timeout=3)"]
ENTRYPOINT ["cachecloak"]
CMD ["run"]
