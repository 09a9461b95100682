# One image for every initstudy service: the MLflow server, the Ray head and workers, and
# the study launcher (see docker-compose.yml).
#
#   docker build -t initstudy .                       # CPU build of PyTorch (the default)
#   docker build -t initstudy:gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#
# The GPU variant takes PyPI's torch wheel, which bundles the CUDA runtime; the host needs
# an NVIDIA driver and the NVIDIA Container Toolkit (deploy/docker-compose.gpu.yml).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# PyTorch first, from its own index: a bare `torch` requirement would pull the CUDA build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models/ models/
COPY pipeline/ pipeline/
RUN pip install . && rm -rf build ./*.egg-info

COPY studies/ studies/
COPY deploy/ deploy/

# Run as an unprivileged user; /mlartifacts is the MLflow artifact volume's mount point.
RUN useradd --create-home --uid 1000 initstudy \
    && mkdir /mlartifacts \
    && chown initstudy:initstudy /mlartifacts
USER initstudy

CMD ["initstudy", "--help"]
