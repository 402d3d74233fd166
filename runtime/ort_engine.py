"""ONNX Runtime engine: CPU execution provider, CUDA / TensorRT providers where present.

Why not Polygraphy's ``OnnxrtRunner`` / ``SessionFromOnnx``: the loader exposes neither
the thread count nor ``optimized_model_filepath``, and the runner's ``infer`` probes every
input with ``util.array.is_torch``, which imports torch when it is installed (this stage
must never import torch). The session is built here with ``onnxruntime`` directly.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from srq.errors import SrqError
from srq.runtime.engine import Engine, check_fixed_shape

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class OrtOptions:
    """Session settings. ``threads``: intra-op threads, 0 = ONNX Runtime's default (one
    per physical core). ``optimization``: one of OPT_LEVELS. ``providers``: keys of
    PROVIDERS in priority order. ``save_optimized``: write the optimized graph next to the
    model as ``<stem>.ort-opt.onnx`` (what actually ran, for reproducibility).
    ``exact_integer``: run the exact U8U8 kernels where ``needs_u8u8_kernels`` says the model's U8S8
    kernels could saturate on a CPU that ``u8s8_can_saturate`` (False keeps ONNX Runtime's default
    kernels, as its own tools run them).
    ``profile``: record ONNX Runtime's per-node profile (read it with ``OrtEngine.op_times``)."""

    threads: int = 0
    optimization: str = "all"
    providers: tuple[str, ...] = ("cpu",)
    save_optimized: bool = True
    exact_integer: bool = True
    profile: bool = False


# |w| <= 64: two u8 x s8 products sum to at most 2 * 255 * 64 = 32640, inside int16.
U8S8_EXACT_MAX_ABS_WEIGHT = 64


def needs_u8u8_kernels(model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime's U8S8 kernels could round differently from the QDQ graph here.

    Without AVX512-VNNI / AVX-VNNI, the x86 U8S8 GEMM (QLinearConv, QGemm, MatMulInteger...)
    adds pairs of u8 x s8 products in saturating int16 (``vpmaddubsw``), which can drift from
    the exact QDQ result; ``session.x64quantprecision=1`` rewrites every s8 weight to u8 so the
    exact U8U8 kernel runs, but U8U8 is no faster than the FP32 convolution on AVX2 (measured in
    docs/speed.md). Saturation needs an int8 operand with ``|w| > 64``: True when an int8
    initializer that a DequantizeLinear reads holds such a value, or when a DequantizeLinear
    reads an int8 tensor that is not an initializer (an int8 activation may become the B side
    of an act x act MatMul). u8-only models are False: they run U8U8 either way.
    """
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        init = inits.get(node.input[0])
        if init is None:
            if _value_elem_type(model, node.input[0]) == onnx.TensorProto.INT8:
                return True
        elif init.data_type == onnx.TensorProto.INT8:
            values = numpy_helper.to_array(init)
            if values.size and int(np.abs(values.astype(np.int32)).max()) > U8S8_EXACT_MAX_ABS_WEIGHT:
                return True
    return False


def u8s8_can_saturate(cpuinfo: str | None = None) -> bool:
    """Whether this CPU's ONNX Runtime U8S8 GEMM could saturate: x86 without AVX512-VNNI / AVX-VNNI.

    With VNNI, MLAS multiplies u8 x s8 with ``vpdpbusd``, which adds four products straight into
    int32 (exact); without it, ``vpmaddubsw`` adds pairs in saturating int16. ``cpuinfo``: the text
    of ``/proc/cpuinfo`` (read when None). Where the CPU cannot be read, True: the exact kernels."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None:  # not an x86 /proc/cpuinfo: no evidence of VNNI
        return True
    return not ({"avx512_vnni", "avx_vnni"} & set(flags))


@functools.cache
def _this_cpu_saturates_u8s8() -> bool:
    """``u8s8_can_saturate()`` of this machine, read once per process."""
    return u8s8_can_saturate()


def _value_elem_type(model: onnx.ModelProto, name: str) -> int | None:
    """Element type of a non-initializer tensor: from the Q node producing it or value_info."""
    for node in model.graph.node:
        if name in node.output and node.op_type == "QuantizeLinear":
            if len(node.input) > 2 and node.input[2]:
                zp = next((t for t in model.graph.initializer if t.name == node.input[2]), None)
                if zp is not None:
                    return zp.data_type
            attr = next((a for a in node.attribute if a.name == "output_dtype"), None)
            return attr.i if attr is not None and attr.i else onnx.TensorProto.UINT8
    for vi in list(model.graph.value_info) + list(model.graph.input):
        if vi.name == name:
            return vi.type.tensor_type.elem_type
    return None


def optimized_model_path(model: Path) -> Path:
    """Where ``save_optimized`` writes the optimized graph: ``<dir>/<stem>.ort-opt.onnx``."""
    return model.with_name(model.stem + ".ort-opt.onnx")


def available_providers() -> list[str]:
    """Keys of PROVIDERS that this onnxruntime build offers."""
    have = set(ort.get_available_providers())
    return [key for key, name in PROVIDERS.items() if name in have]


class OrtEngine(Engine):
    """An ONNX model in an ``onnxruntime.InferenceSession`` with a fixed ``(1, C, H, W)`` input."""

    def __init__(self, path: str | os.PathLike, options: OrtOptions = OrtOptions()):
        self.path = Path(path)
        self.options = options
        if not self.path.is_file():
            raise SrqError(f"{self.path}: no such engine file")
        if options.optimization not in OPT_LEVELS:
            raise SrqError(f"optimization level {options.optimization!r}: expected one of "
                           f"{', '.join(OPT_LEVELS)}")
        missing = [p for p in options.providers if p not in available_providers()]
        if missing:
            raise SrqError(f"execution provider(s) {', '.join(missing)} not available here "
                           f"(available: {', '.join(available_providers())})")
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.graph_optimization_level = OPT_LEVELS[options.optimization]
        so.log_severity_level = 3  # errors only; warnings about unused initializers are noise
        # Exact integer kernels: where an s8 weight could saturate ORT's U8S8 AVX2 path (it sums
        # u8*s8 pairs in int16 and drifts up to 4 LSB from the QDQ graph it fused, measured in
        # docs/export-ort-fusion.md) run the slower exact U8U8 kernels; the engine must compute
        # what calibration simulated. Elsewhere keep U8S8, the only integer path that is faster
        # than FP32 on AVX2, and exact on VNNI CPUs whatever the weights (docs/speed.md).
        try:
            model = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends for a broken file
            raise SrqError(f"{self.path}: ONNX Runtime cannot load it: not an ONNX model "
                           f"({type(exc).__name__})") from exc
        self.u8u8_kernels = options.exact_integer and _this_cpu_saturates_u8s8() and needs_u8u8_kernels(model)
        if self.u8u8_kernels:
            so.add_session_config_entry("session.x64quantprecision", "1")
        # Idle worker threads must not spin: interleaved latency runs of two sessions on few
        # cores would otherwise steal each other's time.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if options.profile:
            self._profile_dir = tempfile.TemporaryDirectory(prefix="srq-ort-profile-")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(self._profile_dir.name) / "ort")
        tmp = None
        if options.save_optimized:
            final = optimized_model_path(self.path)
            tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
            so.optimized_model_filepath = str(tmp)
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=so,
                providers=[PROVIDERS[p] for p in options.providers])
            if tmp is not None:
                os.replace(tmp, final)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SrqError(f"{self.path}: ONNX Runtime cannot load it: {first}") from exc
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
        self._read_io()

    def _read_io(self) -> None:
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise SrqError(f"{self.path}: expected one input and one output, got "
                           f"{[i.name for i in ins]} -> {[o.name for o in outs]}")
        if ins[0].type not in _NP_TYPES:
            raise SrqError(f"{self.path}: input {ins[0].name} is {ins[0].type}, expected float")
        self.input_name, self.output_name = ins[0].name, outs[0].name
        self.input_shape = check_fixed_shape(list(ins[0].shape), "input", self.path)
        self._dtype = _NP_TYPES[ins[0].type]
        declared = list(outs[0].shape)
        if len(declared) == 4 and all(isinstance(d, int) for d in declared[1:]):
            self.output_shape = (1, *declared[1:])
        else:  # shape inference could not propagate: ask the model itself
            self.output_shape = tuple(self.run(np.zeros(self.input_shape, np.float32)).shape)
        _ = self.scale  # validates the pair of shapes

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self.input_shape:
            raise ValueError(f"{self.path.name}: tile shape {x.shape} != engine input {self.input_shape}")
        feed = {self.input_name: np.ascontiguousarray(x, dtype=self._dtype)}
        (y,) = self.session.run([self.output_name], feed)
        return y.astype(np.float32, copy=False)

    def op_times(self) -> dict[str, tuple[float, int]]:
        """Ends profiling (``OrtOptions(profile=True)``): ``{op type: (kernel ms summed over all runs
        so far, nodes run)}``, from ONNX Runtime's per-node kernel times, largest first."""
        if not self.options.profile:
            raise SrqError(f"{self.path.name}: the engine was built without OrtOptions(profile=True)")
        events = json.loads(Path(self.session.end_profiling()).read_text())
        times: dict[str, list] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                t = times.setdefault(e["args"]["op_name"], [0.0, 0])
                t[0] += e["dur"] / 1e3
                t[1] += 1
        return {op: (ms, n) for op, (ms, n) in sorted(times.items(), key=lambda kv: -kv[1][0])}

    def close(self) -> None:
        self.session = None
