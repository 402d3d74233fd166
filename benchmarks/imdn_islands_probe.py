"""Probe: how much faster IMDN x2's W8A8 engine would be with integer ops between its integer convs.

A speed probe, not a deployable model: it edits srq's exported ORT graph (``srq W8A8 sw`` of
``benchmarks/speed.py``: phase 1, 8-bit symmetric weights, FP first conv) by inserting
QuantizeLinear / DequantizeLinear pairs where calibration has no site today, reusing grids that
are near at hand, so the numbers say what ORT's fusions would gain, while the outputs are *not*
what any calibration computes (engine parity is meaningless here). Variants, cumulative:

* ``lrelu``: a Q/DQ after each LeakyReLU with the grid of the next conv's input, repeated on the
  Split output that goes to the Concat (ORT: QLinearLeakyRelu, Split on uint8);
* ``+concat``: a Q/DQ after each block's Concat with its c5 input grid (ORT: QLinearConcat);
* ``+add``: a Q/DQ after each residual Add with the next block's c1 input grid (ORT: QLinearAdd, and
  QLinearConcat for the body's final Concat).

One command (~3 min on 2 idle cores; work files in --work):

    .venv/bin/python benchmarks/imdn_islands_probe.py

Prints and writes ``docs/imdn-islands-probe.md`` / ``.json``: interleaved thread-CPU medians at a
128x128 LR tile, 1 thread, and ORT's per-op-type kernel time of each variant.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import NETS, fp_onnx, machine, op_profile, save_result, srq_onnx, time_interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if tensor in n.input]


def _node(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    return next(n for n in graph.node if n.name == name)


def _insert_qdq(graph: onnx.GraphProto, tensor: str, grid: onnx.NodeProto, readers: list[onnx.NodeProto]) -> None:
    """Q/DQ on ``tensor`` with the scale / zero point of QuantizeLinear ``grid``; ``readers`` read the DQ."""
    k = len(graph.node)
    q = helper.make_node("QuantizeLinear", [tensor, *grid.input[1:3]], [f"probe{k}_q"], name=f"probe{k}_Q")
    dq = helper.make_node("DequantizeLinear", [f"probe{k}_q", *grid.input[1:3]], [f"probe{k}_dq"], name=f"probe{k}_DQ")
    for n in readers:
        n.input[:] = [f"probe{k}_dq" if x == tensor else x for x in n.input]
    graph.node.extend([q, dq])


def _toposort(graph: onnx.GraphProto) -> None:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    todo, order = list(graph.node), []
    while todo:
        n = next(n for n in todo if all(i in ready for i in n.input))
        order.append(n)
        ready.update(n.output)
        todo.remove(n)
    del graph.node[:]
    graph.node.extend(order)


def probe(src: Path, out: Path, steps: set[str]) -> Path:
    """``src`` with the Q/DQ pairs of ``steps`` (subset of lrelu, concat, add) inserted."""
    model = onnx.load(src)
    g = model.graph
    for n in list(g.node):
        readers = _consumers(g, n.output[0])
        if "lrelu" in steps and n.op_type == "LeakyRelu" and [r.op_type for r in readers] == ["Split"]:
            split = readers[0]
            grid = next(c for c in _consumers(g, split.output[1]) if c.op_type == "QuantizeLinear")
            _insert_qdq(g, n.output[0], grid, readers)
            _insert_qdq(g, split.output[0], grid, _consumers(g, split.output[0]))
        block = n.name.split("/")[1] if n.name.startswith("/IMDB") else None
        if "concat" in steps and block and n.op_type == "Concat":
            _insert_qdq(g, n.output[0], _node(g, f"{block}.c5.input_q_QuantizeLinear"), readers)
        if "add" in steps and block and n.name == f"/{block}/Add":
            quant = [r for r in readers if r.op_type == "QuantizeLinear"]
            grid = quant[0] if quant else _node(g, "c.0.input_q_QuantizeLinear")
            _insert_qdq(g, n.output[0], grid, [r for r in readers if r.op_type != "QuantizeLinear"])
    _toposort(g)
    onnx.save(model, out)
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
    base = srq_onnx(spec, "w8a8", args.work, "imdn", "--symmetric-weights")
    paths = {"fp32": fp_onnx(spec, args.work / "imdn_fp.onnx"), "srq W8A8 sw": base}
    for name, steps in (("+lrelu", {"lrelu"}), ("+lrelu+concat", {"lrelu", "concat"}),
                        ("+lrelu+concat+add", {"lrelu", "concat", "add"})):
        paths[name] = probe(base, args.work / f"imdn_probe{name.replace('+', '_')}.onnx", steps)
    load_before = [round(v, 2) for v in os.getloadavg()]
    engines = {n: OrtEngine(p, OrtOptions(threads=1, save_optimized=False)) for n, p in paths.items()}
    x = np.random.default_rng(0).random(engines["fp32"].input_shape, dtype=np.float32)
    raw = time_interleaved(engines, x, args.runs, 3, "IMDN probe")
    profile = op_profile(paths, x, 6)
    fp = Timing(tuple(raw["fp32"][1])).median
    rows = [{"engine": n, "cpu_ms": Timing(tuple(raw[n][1])).median,
             "speedup_cpu": fp / Timing(tuple(raw[n][1])).median, "ops": profile[n]} for n in paths]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "runs": args.runs, "tile": [128, 128], "note": args.note,
              "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()], "rows": rows,
              "command": "python benchmarks/imdn_islands_probe.py " + shlex.join(argv or sys.argv[1:])}
    m = result["machine"]
    lines = ["# IMDN x2 W8A8: what integer islands would buy (speed probe)", "",
             f"`{result['command']}`, {result['date']}, {m['cpu']} ({m['logical_cpus']} logical CPUs, "
             f"{', '.join(m['isa'])}), onnxruntime {m['onnxruntime']}; load average before / after {load_before} / "
             f"{result['load_after']} ({args.note}). Thread-CPU medians of {args.runs} interleaved runs, 128x128 LR "
             "tile, 1 thread; ops: ORT's profiler, kernel ms per run by op type (6 runs). The probe graphs are "
             "speed stand-ins, not calibrated models (see the script's docstring).", "",
             "| engine | CPU ms | speed-up vs FP32 | largest op types: ms (nodes) |", "|---|---:|---:|---|"]
    for r in rows:
        ops = ", ".join(f"{op} {ms:.1f} ({n})" for op, (ms, n) in list(r["ops"].items())[:8])
        lines.append(f"| {r['engine']} | {r['cpu_ms']:.0f} | {r['speedup_cpu']:.2f}x | {ops} |")
    save_result(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
