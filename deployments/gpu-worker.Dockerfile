# The image GPU flow runs start in: the ossforge-gpu pool's Kubernetes worker creates one Job
# per training flow run from this image (prefect.yaml `train/gpu`: job variable `image`, pull
# step `set_working_directory: /opt/ossforge`).
#
# Build from the repository root and push where your cluster pulls from:
#   docker build -f deployments/gpu-worker.Dockerfile -t ossforge-gpu-worker:latest .
#   docker tag ossforge-gpu-worker:latest REGISTRY/ossforge-gpu-worker:TAG && docker push ...
# then set `image` in prefect.yaml (or the pool's default) to that reference.
#
# A devel image, not runtime: DeepSpeed compiles its CUDA ops just in time and needs nvcc.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    # A100 (8.0) and H100/H200 (9.0): the architectures DeepSpeed's JIT ops are built for.
    TORCH_CUDA_ARCH_LIST="8.0;9.0"

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ninja-build \
      libaio-dev git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && pip install --upgrade pip

# torch first and pinned, in its own layer: the default Linux wheel is a CUDA build, and
# pinning it keeps the extras below from pulling another copy.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}"
# Liger Kernel: fused Triton kernels (RMSNorm, SwiGLU, RoPE, linear + cross-entropy), used by
# training/sft.py on GPU by default (--liger auto). Triton ships with the CUDA torch wheel;
# --no-deps keeps pip from resolving torch again. Not in the `train` extra: CPU installs
# would pull Triton for kernels they cannot run.
ARG LIGER_VERSION=0.8.5
RUN pip install --no-deps "liger-kernel==${LIGER_VERSION}"

WORKDIR /opt/ossforge
# Dependencies before code, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p ossforge flows tasks training \
 && touch ossforge/__init__.py flows/__init__.py tasks/__init__.py training/__init__.py \
 && pip install ".[train]" \
 && pip uninstall -y ossforge
COPY ossforge ossforge
COPY flows flows
COPY tasks tasks
COPY training training
COPY prefect.yaml ./
RUN pip install --no-deps -e . \
 && python -c "import torch, deepspeed, liger_kernel, prefect, flows.train" \
 && useradd --create-home --uid 1000 ossforge

USER ossforge
# The Kubernetes worker sets the command (`prefect flow-run execute`); this only documents it.
CMD ["python", "-m", "prefect.engine"]
