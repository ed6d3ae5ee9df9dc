# A CUDA image with the pinned requirements. The devel variant carries nvcc, which the optional
# CUDA kernels of torch_utils/ops need for their first (JIT) build.
#   docker build -t raycond .
#   docker run --gpus all -it --rm -v `pwd`:/workspace/raycond -w /workspace/raycond raycond make test
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    TORCH_EXTENSIONS_DIR=/workspace/.cache/torch_extensions \
    DNNLIB_CACHE_DIR=/workspace/.cache/dnnlib

WORKDIR /workspace/raycond
COPY requirements.txt pyproject.toml README.md ./
# torch is already in the base image at the pinned version, so pip keeps it.
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . .
RUN python -m pip install --no-cache-dir --no-deps -e .
