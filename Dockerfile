# syntax=docker/dockerfile:1
# agentplex as a container image:  docker build -t agentplex .
#
# The image runs `agentplex run -f /etc/agentplex/config.yaml`: mount a config there (see deploy/). It holds
# the gateway and its Python dependencies only. There is no Node: a config whose stdio targets run `npx ...`
# needs an image built FROM this one with Node added. Cloud credentials for backendAuth need the extras:
#   docker build --build-arg EXTRAS=gcp,aws -t agentplex .
# tests/gateway/test_deploy.py checks this file against the code (entrypoint, arguments, ports, probe path).

# The Python the test suite runs on (pyproject.toml: requires-python >= 3.11).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/agentplex
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY federation ./federation
COPY protocols ./protocols
COPY samples ./samples
# A regular (not editable) install: the venv alone is the application; pip compiles the .pyc files now,
# so nothing is written at run time (the pods run with a read-only root filesystem).
RUN /opt/agentplex/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

FROM python:${PYTHON_VERSION}-slim
# A fixed non-root user: the Kubernetes manifests run as the same ids (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 agentplex \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin agentplex \
 && mkdir -p /etc/agentplex /var/lib/agentplex \
 && chown 10001:10001 /var/lib/agentplex
COPY --from=build /opt/agentplex /opt/agentplex
ENV PATH=/opt/agentplex/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The working directory is where relative paths of a config open (an A2A registry's `sqlite:` file, ...).
WORKDIR /var/lib/agentplex
USER 10001:10001
# The ports of deploy/kubernetes/config.yaml: MCP and A2A, the admin API (probes), Prometheus /metrics.
EXPOSE 3000 15000 15020
# /healthz on the admin API (config.adminAddr: 127.0.0.1:15000 by default; 0.0.0.0:15000 in deploy/),
# with Python's urllib because the slim image has no curl. A config with `adminAddr: null` has no probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15000/healthz', timeout=2)"]
# agentplex handles SIGTERM itself (it drains, then ends its stdio servers), so it can be PID 1. It does
# not reap orphaned grandchildren (say, of `npx` wrappers): run with an init (`docker run --init`,
# compose `init: true`) when targets spawn such trees.
ENTRYPOINT ["agentplex"]
CMD ["run", "-f", "/etc/agentplex/config.yaml"]
