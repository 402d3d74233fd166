"""TensorRT engine: built with Polygraphy's TensorRT loaders, run on one CUDA stream.

``tensorrt`` and the CUDA runtime are imported only when an engine is built or loaded; where
either is missing, ``trt_available()`` says why and ``TrtEngine`` / ``build_trt_engine``
raise ``SrqError("TensorRT not available here: <reason>")``. Building uses Polygraphy
(``NetworkFromOnnxPath(strongly_typed=True)``: the Q/DQ types in the graph decide the
precision, ``CreateConfig(load_timing_cache=...)``, ``EngineBytesFromNetwork(save_timing_cache=...)``).
Inference does not use ``TrtRunner``: its ``infer`` probes inputs with
``util.array.is_torch``, which imports torch when installed; the plain execution context
with Polygraphy's ``cuda.DeviceArray`` buffers does the same work torch-free.
"""

from __future__ import annotations

import importlib
import os
import uuid
from pathlib import Path

import numpy as np

from srq.errors import SrqError
from srq.runtime.engine import Engine, check_fixed_shape


def trt_available() -> tuple[bool, str]:
    """``(True, "TensorRT <version>, <n> GPU(s)")`` or ``(False, <why not>)``; imports nothing at module load."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or a broken install raising OSError
        return False, f"the tensorrt package does not import ({type(exc).__name__}: {exc})"
    try:
        import ctypes

        from polygraphy import cuda

        count = ctypes.c_int(0)
        status = cuda.wrapper().handle.cudaGetDeviceCount(ctypes.byref(count))
    except Exception as exc:
        return False, f"no CUDA runtime ({type(exc).__name__}: {exc})"
    if status != 0 or count.value < 1:
        return False, f"no CUDA GPU (cudaGetDeviceCount status {status}, count {count.value})"
    return True, f"TensorRT {trt.__version__}, {count.value} GPU(s)"


def _require_trt():
    ok, reason = trt_available()
    if not ok:
        raise SrqError(f"TensorRT not available here: {reason}")
    return importlib.import_module("tensorrt")


def build_trt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike,
                     timing_cache: str | os.PathLike | None = None) -> Path:
    """Build a strongly typed TensorRT engine from ``onnx_path``; write it atomically.

    ``timing_cache``: a file read when present and updated after the build (keeps
    rebuilds on the same GPU fast and their tactic choice stable).
    """
    _require_trt()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath
    from polygraphy.exception import PolygraphyException

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SrqError(f"{onnx_path}: no such ONNX file")
    cache = str(timing_cache) if timing_cache is not None else None
    config = CreateConfig(load_timing_cache=cache if cache and Path(cache).is_file() else None)
    build = EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path), strongly_typed=True),
                                   config=config, save_timing_cache=cache)
    try:
        blob = build()
    except PolygraphyException as exc:
        raise SrqError(f"{onnx_path}: TensorRT cannot build it: {exc}") from exc
    tmp = engine_path.with_name(f".{engine_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(bytes(blob))
        os.replace(tmp, engine_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return engine_path


class TrtEngine(Engine):
    """A serialized TensorRT engine (``.engine`` / ``.plan``) on the current GPU."""

    def __init__(self, path: str | os.PathLike):
        trt = _require_trt()
        from polygraphy import cuda
        from polygraphy.datatype import DataType

        self.path = Path(path)
        if not self.path.is_file():
            raise SrqError(f"{self.path}: no such engine file")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise SrqError(f"{self.path}: not a TensorRT engine for this TensorRT version / GPU")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        ins = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if n not in ins]
        if len(ins) != 1 or len(outs) != 1:
            raise SrqError(f"{self.path}: expected one input and one output, got {ins} -> {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_shape = check_fixed_shape(list(self._engine.get_tensor_shape(ins[0])),
                                             "input", self.path)
        self.output_shape = check_fixed_shape(list(self._engine.get_tensor_shape(outs[0])),
                                              "output", self.path)
        _ = self.scale
        self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(ins[0])))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(outs[0])))
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        self._d_in = cuda.DeviceArray(self.input_shape, DataType.from_dtype(self._in_dtype))
        self._d_out = cuda.DeviceArray(self.output_shape, DataType.from_dtype(self._out_dtype))
        self._context.set_tensor_address(self.input_name, self._d_in.ptr)
        self._context.set_tensor_address(self.output_name, self._d_out.ptr)
        self._h_out = np.empty(self.output_shape, self._out_dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self.input_shape:
            raise ValueError(f"{self.path.name}: tile shape {x.shape} != engine input {self.input_shape}")
        self._d_in.copy_from(np.ascontiguousarray(x, dtype=self._in_dtype), self._stream)
        if not self._context.execute_async_v3(self._stream.ptr):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed")
        self._d_out.copy_to(self._h_out, self._stream)
        self._stream.synchronize()
        return self._h_out.astype(np.float32)

    def close(self) -> None:
        for buf in ("_d_in", "_d_out", "_stream"):
            obj = self.__dict__.pop(buf, None)
            if obj is not None:
                obj.free()
        self.__dict__.pop("_context", None)
