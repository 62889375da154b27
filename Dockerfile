# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target train   -t mslseg:train .     # adapt/export on NVIDIA GPUs (torch, TensorRT)
#   docker build --target runtime -t mslseg:runtime .   # infer on NVIDIA GPUs without torch
# Run: docker run --gpus all --rm -v "$PWD/data:/data" -v "$PWD/runs:/runs" mslseg:train adapt ...
#
# One CUDA major for everything: both bases are CUDA 12, so pip must not pull the CUDA 13 builds
# that unpinned [gpu]/[tensorrt] resolve to (onnxruntime-gpu >= 1.27, cuda-python 13, tensorrt 11
# -> tensorrt-cu13; driver R580+). One TensorRT for everything: ONNX Runtime's TensorRT EP is built
# against one TensorRT, and an engine built in `train` must load in `runtime` (an engine is tied to
# its TensorRT version). The pairing, from ONNX Runtime's TensorRT EP requirements table
# (onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html#requirements):
# onnxruntime-gpu 1.20 -> TensorRT 10.4, 1.21 -> 10.8, 1.22 -> 10.9, 1.24 -> 10.14 (CUDA 12.9).
# So: onnxruntime-gpu 1.22 with TensorRT 10.9.0.34, the TensorRT of nvcr.io/nvidia/tensorrt:25.03
# (CUDA 12.8.1, cuDNN 9.8, Ubuntu 24.04, Python 3.12; NVIDIA's container release notes), installed
# as the tensorrt wheel in `train`. Change the bases and these pins together.
# train: torch >= 2.6 (transformers 5, for SegFormer, refuses older torch).
ARG PYTORCH_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:25.03-py3
ARG ORT_GPU_PIN="onnxruntime-gpu[cuda,cudnn]==1.22.0"
ARG CUDA_PYTHON_PIN="cuda-python>=12,<13"
ARG TENSORRT_VERSION=10.9.0.34

# ---- train: CUDA PyTorch + mslseg[train,gpu,tensorrt] ---------------------------------------
FROM ${PYTORCH_IMAGE} AS train
ARG MSLSEG_UID=1000
ARG ORT_GPU_PIN
ARG CUDA_PYTHON_PIN
ARG TENSORRT_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 OMP_WAIT_POLICY=PASSIVE
WORKDIR /opt/mslseg
COPY pyproject.toml README.md ./
COPY mslseg ./mslseg
COPY export ./export
COPY runtime ./runtime
# torch comes from the base image; the [train] extra's torch>=2.6 is already satisfied.
# tensorrt==X is the meta package of tensorrt-cu12==X here; its libraries come from NVIDIA's index.
# DL3013: this installs the project itself from its source, not a registry package.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[train,gpu,tensorrt]" "${ORT_GPU_PIN}" "${CUDA_PYTHON_PIN}" \
        "tensorrt==${TENSORRT_VERSION}" \
    && useradd --create-home --uid "${MSLSEG_UID}" mslseg
USER ${MSLSEG_UID}
WORKDIR /work
ENTRYPOINT ["mslseg"]
CMD ["--help"]

# ---- runtime: TensorRT/CUDA runtime + mslseg[gpu], no torch ---------------------------------
FROM ${TENSORRT_IMAGE} AS runtime
ARG MSLSEG_UID=1000
ARG ORT_GPU_PIN
ARG CUDA_PYTHON_PIN
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/mslseg
COPY pyproject.toml README.md ./
COPY mslseg ./mslseg
COPY export ./export
COPY runtime ./runtime
# the base image ships TensorRT (its Python package too), so no [tensorrt]; [gpu] adds
# onnxruntime-gpu with its CUDA/cuDNN wheels, cuda-python and PyAV, pinned to CUDA 12.
# Ubuntu 24.04: its Python is marked externally managed (PEP 668), and this image is the
# environment, so pip installs into it; its stock user `ubuntu` holds uid 1000, freed for mslseg.
ENV PIP_BREAK_SYSTEM_PACKAGES=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu]" "${ORT_GPU_PIN}" "${CUDA_PYTHON_PIN}" \
    && getent passwd "${MSLSEG_UID}" | cut -d: -f1 | xargs -r userdel \
    && useradd --create-home --uid "${MSLSEG_UID}" mslseg
USER ${MSLSEG_UID}
WORKDIR /work
ENTRYPOINT ["mslseg"]
CMD ["--help"]
