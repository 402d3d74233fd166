#!/usr/bin/env bash
# Start-up of the TensorRT image: build (or reuse) the engine for this GPU, gate it
# against ONNX Runtime on the built-in demo images, then serve `srq upscale`.
set -euo pipefail
onnx=/opt/engine/model.onnx
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr -c 'A-Za-z0-9' '_')
plan="/cache/model-${gpu}.plan"
if [ ! -s "$plan" ]; then
  python3 - "$onnx" "$plan" <<'PY'
import sys
from srq.runtime.trt_engine import build_trt_engine
build_trt_engine(sys.argv[1], sys.argv[2], timing_cache="/cache/timing.cache")
PY
fi
# Parity gate: the TensorRT engine vs ONNX Runtime running the same QDQ graph.
srq check --fp "$onnx" --engine "$plan" --data builtin:demo --report /cache/startup-report \
  --max-psnr-drop "${SRQ_MAX_PARITY_DROP:-0.1}" \
  || { echo "srq: TensorRT engine fails the parity gate; refusing to serve" >&2; exit 1; }
exec srq upscale "$plan" "$@"
