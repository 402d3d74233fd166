"""Small real ONNX SR networks for the runtime tests, built with onnx.helper.

``make_sr_onnx``: ``depth`` 3x3 Conv(+ReLU) layers on the LR input, plus a 1x1 Conv that
repeats each input channel s*s times (nearest upsampling once through DepthToSpace), added
and rearranged by DepthToSpace(CRD). Receptive-field radius = ``depth`` LR pixels. Weights
are seeded, so the same seed at two input sizes is the same network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_sr_onnx(path: Path, hw: tuple[int, int], channels: int = 3, scale: int = 2,
                 depth: int = 3, width: int = 8, seed: int = 0, body_gain: float = 0.3) -> Path:
    rng = np.random.default_rng(seed)
    h, w = hw
    c_out = channels * scale * scale
    inits, nodes = [], []
    prev, c_prev = "lr", channels
    for i in range(depth):
        c_next = c_out if i == depth - 1 else width
        wt = rng.normal(0, 1 / np.sqrt(9 * c_prev), (c_next, c_prev, 3, 3)).astype(np.float32)
        if i == depth - 1:
            wt *= body_gain
        b = rng.normal(0, 0.02, c_next).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        prev, c_prev = f"conv{i}", c_next
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"relu{i}"]))
            prev = f"relu{i}"
    rep = np.zeros((c_out, channels, 1, 1), np.float32)
    for c in range(channels):
        rep[c * scale * scale:(c + 1) * scale * scale, c] = 1.0
    inits.append(numpy_helper.from_array(rep, "rep"))
    nodes += [helper.make_node("Conv", ["lr", "rep"], ["skip"], kernel_shape=[1, 1]),
              helper.make_node("Add", [prev, "skip"], ["sum"]),
              helper.make_node("DepthToSpace", ["sum"], ["sr"], blocksize=scale, mode="CRD")]
    graph = helper.make_graph(
        nodes, "tiny_sr",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, channels, h, w])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT,
                                       [1, channels, h * scale, w * scale])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def quantize_w8a8(fp: Path, out: Path, seed: int = 0) -> Path:
    """ONNX Runtime's own static QDQ quantizer (W8 per-channel, A8 asymmetric), MinMax on
    four random tiles: a real integer model of the same network to check against."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    shape = [d.dim_value for d in onnx.load(fp).graph.input[0].type.tensor_type.shape.dim]

    class Tiles(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.feeds = iter([{"lr": rng.random(shape, np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(fp), str(out), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def test_tiny_sr_net_is_nearest_upscale_plus_a_small_body(tmp_path):
    """With the body switched off the network is exactly nearest-neighbour x2 (checks the DepthToSpace wiring)."""
    import onnxruntime as ort

    p = make_sr_onnx(tmp_path / "n.onnx", (5, 7), body_gain=0.0, depth=1)
    # body_gain 0 zeroes the last conv's weights; its bias stays: remove it by comparison
    lr = np.random.default_rng(1).random((1, 3, 5, 7), np.float32)
    sr = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"lr": lr})[0]
    bias = onnx.numpy_helper.to_array(onnx.load(p).graph.initializer[1])  # b0, (12,)
    nearest = lr.repeat(2, axis=2).repeat(2, axis=3)
    bias_img = bias.reshape(3, 2, 2)  # CRD: channel c*4 + i*2 + j -> (c, i, j)
    expected = nearest + np.tile(bias_img, (1, 5, 7))[None]
    np.testing.assert_allclose(sr, expected, atol=1e-6)
