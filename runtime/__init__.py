"""Runtime stage (torch-free): ONNX -> ORT/TensorRT engine, tiled inference, parity report and release gates.

Modules: ``engine`` (the Engine interface, ``open_engine``), ``ort_engine`` / ``trt_engine``
(backends), ``tiling`` (whole images through a fixed tile), ``compare`` (scores),
``latency`` (interleaved timing), ``gates``, ``report`` / ``report_html`` (report files),
``check`` (``run_check``: all of it over a dataset), ``upscale_files`` (``srq upscale``).
Nothing here may import torch, even indirectly (tests/test_runtime_torch_free.py).
"""
