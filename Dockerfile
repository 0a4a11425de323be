# Slim runtime image for the in-cluster daemon: `agent-autoscaler run` as a non-root user.
# The UID matches runAsUser in deploy/deployment.yaml.
# NOTE: no Docker engine runs where this project is built and tested, so this file has
# not been built; the same install (pip install .) is what CI runs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY forecasters ./forecasters
COPY actuators ./actuators
COPY deploy ./deploy
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN groupadd --system --gid 65532 autoscaler \
    && useradd --system --uid 65532 --gid autoscaler --no-create-home autoscaler
COPY --from=build /install /usr/local
# The example config names its trace as ../data/..., so config and data stay siblings.
COPY config /opt/agent-autoscaler/config
COPY data /opt/agent-autoscaler/data
USER 65532:65532
ENV PYTHONUNBUFFERED=1
EXPOSE 9464
ENTRYPOINT ["agent-autoscaler"]
CMD ["run", "--config", "/opt/agent-autoscaler/config/example.yaml"]
