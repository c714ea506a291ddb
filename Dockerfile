# hearthbot image. Two stages: the builder compiles llama-cpp-python (llama.cpp) into a venv
# with docker/install.sh, the same script CI runs; the runtime gets only that venv.
#
#   docker build -t hearthbot .
#   docker run -d --name hearthbot -v hearthbot-data:/data -v hearthbot-models:/data/models \
#       -e HEARTHBOT_DISCORD__TOKEN=... hearthbot
#
# Pinned to an exact release; pin a digest as well (python:3.11.13-slim-bookworm@sha256:...)
# for byte-for-byte reproducible builds.
#
# For an NVIDIA GPU (run with `docker run --gpus all`, the NVIDIA Container Toolkit):
#   docker build --build-arg GPU=cuda --build-arg PYTHON_IMAGE=IMAGE -t hearthbot:cuda .
# where IMAGE has Python 3.11 and the CUDA toolkit (nvcc, cuBLAS), both stages use it.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# cpu, or the GPU llama.cpp is built for (docker/cmake_args.sh): cuda, vulkan, rocm.
ARG GPU=cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY personas ./personas
COPY docker/install.sh docker/cmake_args.sh ./docker/
RUN GPU="${GPU}" sh docker/install.sh /opt/hearthbot/venv /src

FROM ${PYTHON_IMAGE}
# libgomp1: llama.cpp's CPU threads (OpenMP); the builder's compiler brought it there.
# apt-get clean: apt's package caches (80 MB) too, on a base without Debian's docker-clean.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-log-init --uid 10001 --user-group --home-dir /data hearthbot \
    && mkdir -p /data/models \
    && chown -R hearthbot:hearthbot /data
COPY --from=builder /opt/hearthbot/venv /opt/hearthbot/venv

# data_dir: the history database; models/ in it holds the GGUF (a volume of its own, so a
# model is downloaded once and can be shared read-only). Secrets: Docker/compose secrets in
# /run/secrets, one file per setting (e.g. discord__token), read like systemd credentials.
# `docker stop` waits 10 s by default: the answer in flight gets 8 of them.
ENV PATH=/opt/hearthbot/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEARTHBOT_BOT__DATA_DIR=/data \
    HEARTHBOT_BOT__SHUTDOWN_GRACE_S=8 \
    CREDENTIALS_DIRECTORY=/run/secrets
VOLUME ["/data", "/data/models"]
USER 10001:10001
WORKDIR /data
# /healthz, /readyz, /metrics: on 127.0.0.1 inside the container. To scrape from outside:
# -e HEARTHBOT_HEALTH__LISTEN=0.0.0.0:9470 -p 127.0.0.1:9470:9470
EXPOSE 9470
# Liveness: the event loop and the model worker answer. Loading a big model takes a while.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; h, _, p = os.environ.get('HEARTHBOT_HEALTH__LISTEN', '127.0.0.1:9470').rpartition(':'); h = '127.0.0.1' if h in ('0.0.0.0', '[::]', '') else h; urllib.request.urlopen(f'http://{h}:{p}/healthz', timeout=4)"]
ENTRYPOINT ["hearthbot"]
CMD ["run"]
