# cachecloak as a sidecar container.  It listens on 127.0.0.1:6379 inside the pod's
# network namespace, which the application container shares; mount the configuration
# and the secrets, for example:
#   docker run -v $PWD/cachecloak.yaml:/etc/cachecloak/cachecloak.yaml:ro \
#     -e CACHECLOAK_CONFIG=/etc/cachecloak/cachecloak.yaml \
#     -e CACHECLOAK_SECRET_PROVIDER=dir:///run/secrets cachecloak
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home cachecloak
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 6379
STOPSIGNAL SIGTERM
ENTRYPOINT ["cachecloak"]
CMD ["run"]
