#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU: measures lmcli's GPU path and writes one
# JSON summary (default gpu-check.json). Needs PyTorch and lmcli's dependencies; downloads nothing.
#   bash benchmarks/gpu_check.sh [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=. exec "${PYTHON:-python3}" benchmarks/gpu_check.py --out "${1:-gpu-check.json}"
