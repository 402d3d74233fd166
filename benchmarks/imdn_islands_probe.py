"""Probe: how fast IMDN x2's W8A8 engine could get if the float work left in its blocks were integer.

A speed probe, not a deployable model. It edits srq's most integer exported ORT graph of IMDN (``srq W8A8 int``
of ``benchmarks/speed.py``: ``--symmetric-weights --first-conv-bits 8 --integer-gates --shared-inputs
--integer-residuals``, where every conv output and residual sum is already on a grid and only the LeakyReLUs,
the Split / Concat and the channel attention (CCA) of each block run in float) so that ORT's fusions show what
each remaining step would gain. Grids are borrowed from neighbouring sites, so the outputs are *not* what any
calibration computes. Variants, cumulative:

* ``int8 activations``: each LeakyReLU's output quantized before its Split on the block's c2 input grid
  (ORT: QLinearLeakyRelu, Split on uint8); c3 / c4 inputs and c4's output moved onto that grid too, so the
  Concat joins uint8 parts of one grid and one DequantizeLinear feeds the attention;
* ``+ integer gating``: the attention's sigmoid output on a [0, 1] 8-bit grid, so the gating Mul and c5's
  input quantization fuse into QLinearMul;
* ``+ exact statistics``: the attention's per-channel mean and variance summed from the Concat's uint8 levels
  (float32 partial sums of 256 elements, exact because each stays below 2^24, then float64): what calibration
  could reproduce bit for bit;
* ``float32 statistics`` (instead of the line above): mean and variance in float32 on the dequantized Concat,
  as ONNX Runtime's quantizer leaves them; calibration cannot reproduce that summation order;
* ``+ exact statistics, last conv``: the exact-statistics graph edited from ``srq W8A8 int`` with the upsampler's
  conv quantized too (``--include upsampler.0``), so that every conv is integer;
* ``per part: ...``: the same without tying grids: each LeakyReLU output on its next conv's input grid (which
  its Split's second part is read on anyway), so the Concat joins parts of four grids, and the gating runs as
  one QLinearMul per part into c5's input grid, then a uint8 Concat; exact statistics per part.

Built since (2026-12-07, later): the calibrated, exact engine these stand-ins pointed to (``--integer-concats
--integer-activations``, per-part grids, no tie; docs/speed.md section 000). The probe stays as the record of
what each step was worth.

One command (~4 min on 2 idle cores; work files cached in --work):

    .venv/bin/python benchmarks/imdn_islands_probe.py

Writes ``docs/imdn-islands-probe.md`` / ``.json``: interleaved thread-CPU medians at a 128x128 LR tile, 1
thread, against FP32 and ``quantize_static`` W8A8, and ORT's per-op-type kernel time of each graph.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import (INTEGER, NETS, fp_onnx, machine, op_profile, ort_quantized, save_result,  # noqa: E402
                   srq_onnx, time_interleaved)

ROOT = Path(__file__).resolve().parents[1]
_NAMES = itertools.count()
VARIANTS = {"int8 activations": ("act",), "+ integer gating": ("act", "gate"),
            "+ exact statistics": ("act", "gate", "exact"), "float32 statistics": ("act", "gate", "float32"),
            "+ exact statistics, last conv": ("act", "gate", "exact", "last"),
            "per part: gating": ("part",), "per part: + exact statistics": ("part", "exact"),
            "per part: + exact statistics, last conv": ("part", "exact", "last")}


def _node(graph: gs.Graph, name: str) -> gs.Node:
    return next(n for n in graph.nodes if n.name == name)


def _add(graph: gs.Graph, op: str, inputs: list, dtype, attrs: dict | None = None) -> gs.Variable:
    name = f"probe{next(_NAMES)}_{op}"
    out = gs.Variable(name, dtype=dtype)
    graph.nodes.append(gs.Node(op, name, attrs or {}, inputs, [out]))
    return out


def _reduce(graph: gs.Graph, op: str, x: gs.Variable, axis: int, dtype, keepdims: int = 1) -> gs.Variable:
    """``op`` over ``axis`` at the graph's opset 13 (ReduceSum: axes as an input; the others: an attribute)."""
    if op == "ReduceSum":
        return _add(graph, op, [x, _const(np.int64([axis]))], dtype, {"keepdims": keepdims})
    return _add(graph, op, [x], dtype, {"axes": [axis], "keepdims": keepdims})


def _const(values) -> gs.Constant:
    return gs.Constant(f"probe_c{next(_NAMES)}", np.asarray(values))


def _int8_splits(g: gs.Graph, block: str, tie: bool) -> list[tuple[gs.Variable, gs.Tensor, gs.Tensor]]:
    """Q after each of the block's three LeakyReLUs, before its Split (ORT: QLinearLeakyRelu, uint8 Split), on
    the grid of the conv that reads the Split's second part; with ``tie`` that conv's input grid (and int32 bias
    scale) is first set to the block's c2 input grid. Returns the first parts: (uint8 levels, scale, zero point)."""
    t = g.tensors()
    parts = []
    for k, split in enumerate(_node(g, f"/{block}/Split{s}") for s in ("", "_1", "_2")):
        conv = f"{block}.c{k + 2}"
        quant, dequant = _node(g, f"{conv}.input_q_QuantizeLinear"), _node(g, f"{conv}.input_q_DequantizeLinear")
        scale, zero = quant.inputs[1], quant.inputs[2]
        if tie:
            scale.values = t[f"{block}.c2.input_q_scale"].values.copy()
            zero.values = t[f"{block}.c2.input_q_zero_point"].values.copy()
            bias_scale = scale.values * t[f"{conv}.weight_q_scale"].values
            t[f"{conv}.bias_int32_scale"].values = bias_scale.astype(np.float32)
        split.inputs[0] = _add(g, "QuantizeLinear", [split.inputs[0], scale, zero], np.uint8)
        for out in split.outputs:
            out.dtype = np.uint8
        dequant.inputs[0] = split.outputs[1]
        quant.inputs.clear()
        quant.outputs.clear()
        parts.append((split.outputs[0], scale, zero))
    return parts


def _int8_activations(g: gs.Graph, block: str) -> gs.Variable:
    """``_int8_splits`` on one grid per block (the c2 input grid), c4's output moved onto it too, uint8 Concat and
    one DQ for the attention; returns the uint8 Concat."""
    t = g.tensors()
    parts = [levels for levels, _, _ in _int8_splits(g, block, tie=True)]
    scale, zero = t[f"{block}.c2.input_q_scale"], t[f"{block}.c2.input_q_zero_point"]
    t[f"{block}.c4.output_scale"].values = scale.values.copy()
    t[f"{block}.c4.output_zero_point"].values = zero.values.copy()
    parts.append(t[f"{block}.c4.output_q"])
    concat = _node(g, f"/{block}/concat/Concat")
    floats = concat.outputs[0]
    levels = gs.Variable(f"{block}_concat_q", dtype=np.uint8)
    concat.inputs, concat.outputs = parts, [levels]
    g.nodes.append(gs.Node("DequantizeLinear", f"{block}_concat_DQ", {}, [levels, scale, zero], [floats]))
    return levels


def _integer_gating(g: gs.Graph, block: str) -> None:
    mul = _node(g, f"/{block}/cca/gate/Mul")
    scale, zero = _const(np.float32(1 / 255)), _const(np.uint8(0))
    mul.inputs[1] = _add(g, "DequantizeLinear", [_add(g, "QuantizeLinear", [mul.inputs[1], scale, zero], np.uint8),
                                                 scale, zero], np.float32)


def _exact_sums(g: gs.Graph, levels: gs.Variable, channels: int) -> tuple[gs.Variable, gs.Variable]:
    """Per-channel sums of ``levels`` (uint8 ``[1, channels, H, W]``) and of their squares, ``[1, channels]``
    float64: float32 partial sums of 256 levels (exact: each stays below 2^24), then float64 (exact)."""
    chunks = _add(g, "Cast", [_add(g, "Reshape", [levels, _const(np.int64([1, channels, -1, 256]))], np.uint8)],
                  np.float32, {"to": onnx.TensorProto.FLOAT})
    sums = [_reduce(g, op, chunks, 3, np.float32, keepdims=0) for op in ("ReduceSum", "ReduceSumSquare")]
    s1, s2 = (_reduce(g, "ReduceSum", _add(g, "Cast", [s], np.float64, {"to": onnx.TensorProto.DOUBLE}), 2,
                      np.float64, keepdims=0) for s in sums)
    return s1, s2


def _statistics(g: gs.Graph, block: str, parts: list[tuple[gs.Variable, int]] | None) -> None:
    """Replace the attention's (std, mean) inputs of its Add with per-channel sums of the uint8 ``parts``
    (``(levels, channels)``; exact) or, for ``None``, of the dequantized Concat in float32; the tiny
    ``[1, C, 1, 1]`` arithmetic after the sums is a stand-in."""
    add = _node(g, f"/{block}/cca/contrast/Add")
    if parts is not None:
        sums = [_exact_sums(g, levels, channels) for levels, channels in parts]
        s1, s2 = ((_add(g, "Concat", [s[i] for s in sums], np.float64, {"axis": 1}) if len(sums) > 1 else sums[0][i])
                  for i in (0, 1))
        var = _add(g, "Sub", [s2, _add(g, "Mul", [s1, s1], np.float64)], np.float64)
        mean, var = (_add(g, "Cast", [v], np.float32, {"to": onnx.TensorProto.FLOAT}) for v in (s1, var))
        axes = [2, 3]
    else:
        x = _add(g, "Reshape", [_node(g, f"/{block}/cca/gate/Mul").inputs[0], _const(np.int64([1, 64, -1]))],
                 np.float32)
        mean = _reduce(g, "ReduceMean", x, 2, np.float32)
        centred = _add(g, "Sub", [x, mean], np.float32)
        var = _reduce(g, "ReduceMean", _add(g, "Mul", [centred, centred], np.float32), 2, np.float32)
        axes = [3]
    std = _add(g, "Sqrt", [_add(g, "Abs", [var], np.float32)], np.float32)
    add.inputs = [_add(g, "Unsqueeze", [v, _const(np.int64(axes))], np.float32) for v in (std, mean)]


def _per_part_block(g: gs.Graph, block: str) -> list[tuple[gs.Variable, int]]:
    """Each LeakyReLU output on its next conv's input grid before its Split (QLinearLeakyRelu, uint8 Split;
    no grid changes), the gate on a [0, 1] grid, and the gating as one QLinearMul per Concat part into c5's
    input grid followed by a uint8 Concat; returns the four uint8 parts (levels, channels)."""
    t = g.tensors()
    parts = _int8_splits(g, block, tie=False)
    parts.append((t[f"{block}.c4.output_q"], t[f"{block}.c4.output_scale"], t[f"{block}.c4.output_zero_point"]))
    mul = _node(g, f"/{block}/cca/gate/Mul")
    c5_quant = _node(g, f"{block}.c5.input_q_QuantizeLinear")
    c5_dequant = _node(g, f"{block}.c5.input_q_DequantizeLinear")
    gate_scale, gate_zero = _const(np.float32(1 / 255)), _const(np.uint8(0))
    gate = _add(g, "QuantizeLinear", [mul.inputs[1], gate_scale, gate_zero], np.uint8)
    sizes = [16, 16, 16, 16]
    gates = [gs.Variable(f"probe{next(_NAMES)}_gate", dtype=np.uint8) for _ in sizes]
    g.nodes.append(gs.Node("Split", f"probe{next(_NAMES)}_Split", {"axis": 1}, [gate, _const(np.int64(sizes))], gates))
    products, floats = [], []
    for (levels, scale, zero), part_gate in zip(parts, gates):
        x = _add(g, "DequantizeLinear", [levels, scale, zero], np.float32)
        floats.append(x)
        y = _add(g, "DequantizeLinear", [part_gate, gate_scale, gate_zero], np.float32)
        products.append(_add(g, "QuantizeLinear", [_add(g, "Mul", [x, y], np.float32), *c5_quant.inputs[1:3]],
                             np.uint8))
    c5_dequant.inputs[0] = _add(g, "Concat", products, np.uint8, {"axis": 1})
    _node(g, f"/{block}/concat/Concat").inputs = floats  # float Concat, still read by the float statistics
    c5_quant.inputs.clear()
    c5_quant.outputs.clear()
    return [(levels, 16) for levels, _, _ in parts]


def probe(src: Path, out: Path, steps: tuple[str, ...]) -> Path:
    """``src`` with the edits of ``steps`` (act [, gate] | part; exact | float32; last) in each IMDN block."""
    g = gs.import_onnx(onnx.load(src))
    blocks = sorted({n.name.split("/")[1] for n in g.nodes if n.name.startswith("/IMDB") and n.op == "Concat"})
    for block in blocks:
        if "part" in steps:
            parts = _per_part_block(g, block)
        else:
            parts = [(_int8_activations(g, block), 64)]
            if "gate" in steps:
                _integer_gating(g, block)
        if "exact" in steps or "float32" in steps:
            _statistics(g, block, parts if "exact" in steps else None)
    g.cleanup().toposort()
    onnx.save(gs.export_onnx(g), out)
    return out


def main(argv: list[str] | None = None) -> int:
    from srq.runtime.latency import Timing
    from srq.runtime.ort_engine import OrtEngine, OrtOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/srq-speed"))
    ap.add_argument("--note", default="no note", help="load situation")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "imdn-islands-probe")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    _, spec, _, _ = NETS["imdn"]
    fp = fp_onnx(spec, args.work / "imdn_fp.onnx")
    base = srq_onnx(spec, "w8a8", args.work, "imdn", "--symmetric-weights", *INTEGER)
    paths = {"fp32": fp, "ORT qs W8A8": ort_quantized(fp, args.work / "imdn_ortqs_w8a8.onnx"), "srq W8A8 int": base}
    every_conv = srq_onnx(spec, "w8a8", args.work, "imdn", "--symmetric-weights", *INTEGER, "--include", "upsampler.0")
    for name, steps in VARIANTS.items():
        src = every_conv if "last" in steps else base
        paths[name] = probe(src, args.work / f"imdn_probe_{'_'.join(steps)}.onnx", steps)
    load_before = [round(v, 2) for v in os.getloadavg()]
    engines = {n: OrtEngine(p, OrtOptions(threads=1, save_optimized=False, exact_integer=n != "ORT qs W8A8"))
               for n, p in paths.items()}
    x = np.random.default_rng(0).random(engines["fp32"].input_shape, dtype=np.float32)
    raw = time_interleaved(engines, x, args.runs, 3, "IMDN probe")
    profile = op_profile(paths, x, 6)
    cpu = {n: Timing(tuple(raw[n][1])).median for n in paths}
    rows = [{"engine": n, "cpu_ms": cpu[n], "speedup_cpu": cpu["fp32"] / cpu[n], "ops": profile[n]} for n in paths]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "runs": args.runs, "tile": [128, 128], "note": args.note,
              "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()], "rows": rows,
              "command": "python benchmarks/imdn_islands_probe.py " + shlex.join(argv or sys.argv[1:])}
    m = result["machine"]
    lines = ["# IMDN x2 W8A8: what integer blocks would buy (speed probe)", "",
             f"`{result['command']}`, {result['date']}, {m['cpu']} ({m['logical_cpus']} logical CPUs, "
             f"{', '.join(m['isa'])}), onnxruntime {m['onnxruntime']}; load average before / after {load_before} / "
             f"{result['load_after']} ({args.note}). Thread-CPU medians of {args.runs} interleaved runs, 128x128 LR "
             "tile, 1 thread; ops: ORT's profiler, kernel ms per run by op type (6 runs). The probe rows are "
             "speed stand-ins edited from `srq W8A8 int`, not calibrated models (see the script's docstring).", "",
             "| engine | CPU ms | speed-up vs FP32 | kernel ms | largest op types: ms (nodes) |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        ops = ", ".join(f"{op} {ms:.1f} ({n})" for op, (ms, n) in list(r["ops"].items())[:8])
        kernel = sum(ms for ms, _ in r["ops"].values())
        lines.append(f"| {r['engine']} | {r['cpu_ms']:.0f} | {r['speedup_cpu']:.2f}x | {kernel:.0f} | {ops} |")
    save_result(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
