"""QDQ export of the real IMDN x2 checkpoint: ORT parity with the fake-quant model, fusion, lint, refusals.

Recipes come from ``srq.calib.api.calibrate`` (phase 1, policy body, 32x32 crops of Set5 LR);
parity runs on 48x48 tiles of other Set5 images in ONNX Runtime (ORT_ENABLE_ALL,
``session.x64quantprecision=1``) against ``apply_recipe`` on a fresh load.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, apply_recipe
from srq.calib.sites import PlacementConfig
from srq.errors import SrqError
from srq.export.fp_onnx import export_fp_onnx
from srq.export.lint import lint_model
from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_export import export_quantized
from srq.imaging.datasets import open_dataset
from srq.pipeline.cli import main
from srq.zoo.loader import load_model

pytestmark = pytest.mark.shared_data
TILE = (48, 48)


def _weights(shared_data):
    return shared_data / "weights/IMDN/IMDN_x2.pth"


@pytest.fixture(scope="module")
def recipes(shared_data, lr_images):
    """(bits, first_conv_bits, float_output, layer_bits) -> recipe (policy body) calibrated on 32x32 crops
    of the first two Set5 images; with layer_bits the 8-bit layers get symmetric weights (srq run's
    format)."""
    model = load_model(_weights(shared_data))
    crops = [im[:, :, :32, :32] for im in lr_images[:2]]
    made = {}

    def get(bits: int, first_conv_bits: int | None = None, float_output: tuple[str, ...] = (),
            layer_bits: tuple[str, ...] = ()):
        key = bits, first_conv_bits, float_output, layer_bits
        if key not in made:
            cfg = CalibConfig(PlacementConfig(policy="body", w_bits=bits, a_bits=bits, first_conv_bits=first_conv_bits,
                                              float_output=float_output, layer_bits=layer_bits,
                                              weight_symmetric_8bit=bool(layer_bits)), data="Set5 LR 32x32")
            made[key] = calibrate(model.module, cfg, crops, ModelInfo.of(model))
        return made[key]
    return get


def _ort_session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _tiles(lr_images) -> list[torch.Tensor]:
    """48x48 tiles of Set5 images 3-5 (not used for calibration)."""
    return [im[:, :, 40:40 + TILE[0], 40:40 + TILE[1]].contiguous() for im in lr_images[2:]]


def _parity(shared_data, recipe, path, tiles) -> tuple[float, float]:
    """(PSNR dB of engine vs fake-quant, fraction of pixels differing by > 1/255), outputs clipped to [0, 1]."""
    fake = load_model(_weights(shared_data))
    apply_recipe(fake.module, recipe)
    sess = _ort_session(path)
    diffs = []
    for x in tiles:
        with torch.no_grad():
            ref = fake.module(x).clamp(0, 1).numpy()
        out = np.clip(sess.run(None, {"lr": x.numpy()})[0], 0, 1)
        diffs.append((out - ref).ravel())
    d = np.concatenate(diffs).astype(np.float64)
    mse = float(np.mean(d**2))
    return (float("inf") if mse == 0 else 10 * np.log10(1 / mse)), float(np.mean(np.abs(d) > 1 / 255))


def _engine_first_conv(path, x: torch.Tensor, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """IMDB1.c1 in the graph ORT really runs (``ORT_ENABLE_ALL``): (input levels, output levels), NCHW uint8.

    The optimized graph is saved, the fused QLinearConv's output and its integer input (QuantizeLinear
    or Clip output, behind the layout Transposes) are made graph outputs, and that graph runs as it is."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    model = onnx.load(tmp_path / "optimized.onnx")
    producer = {o: n for n in model.graph.node for o in n.output}
    (conv,) = [n for n in model.graph.node if n.op_type == "QLinearConv" and n.name.startswith("/IMDB1/c1/")]
    channels_last = any(a.name == "channels_last" and a.i == 1 for a in conv.attribute)
    q_in = conv.input[0]
    while producer[q_in].op_type == "Transpose":
        q_in = producer[q_in].input[0]
    assert producer[q_in].op_type in ("QuantizeLinear", "Clip")  # b < 8: the integer Clip after the Q
    for name in (q_in, conv.output[0]):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the fused graph as saved
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    levels_in, levels_out = sess.run([q_in, conv.output[0]], {"lr": x.numpy()})
    return levels_in, levels_out.transpose(0, 3, 1, 2) if channels_last else levels_out


def _fake_first_conv(shared_data, recipe, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """IMDB1.c1 of the fake-quantized model: (input levels, output levels) as the engine's uint8 levels."""
    fake = load_model(_weights(shared_data))
    apply_recipe(fake.module, recipe)
    seen: dict[str, np.ndarray] = {}

    def keep(key: str, q, t: torch.Tensor) -> None:  # hooks return None: nothing replaced
        s, zp = (v.detach() for v in q.qparams())
        seen[key] = torch.clamp(torch.round(t / s) + zp, q.fmt.qmin, q.fmt.qmax).numpy().astype(np.uint8)

    c1 = fake.module.IMDB1.c1
    c1.register_forward_pre_hook(lambda m, a: keep("in", m.input_q, a[0]))
    c1.register_forward_hook(lambda m, a, y: keep("out", m.output, y))  # before the in-place activation
    with torch.no_grad():
        fake.module(x)
    return seen["in"], seen["out"]


@pytest.mark.parametrize("bits", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_first_conv_is_bit_exact_where_its_inputs_agree(shared_data, lr_images, recipes, bits, tmp_path):
    """Scales, zero points, integer weights, int32 bias, input Q/Clip and output Q of one real conv, run
    as ORT's fused QLinearConv: every output level whose 3x3 window sees the same input levels equals
    the calibrated model's. Input levels may differ (rarely) because the FP first conv ``fea_conv``
    rounds differently in ORT (MLAS) and PyTorch (docs/export-parity.md)."""
    recipe = recipes(bits)
    path = export_quantized(load_model(_weights(shared_data)), recipe, "ort", TILE, tmp_path / "m.onnx")
    for x in _tiles(lr_images):
        eng_in, eng_out = _engine_first_conv(path, x, tmp_path)
        fake_in, fake_out = _fake_first_conv(shared_data, recipe, x)
        flipped = torch.from_numpy((eng_in != fake_in).any(axis=1, keepdims=True).astype(np.float32))
        touched = F.max_pool2d(flipped, 3, stride=1, padding=1).numpy().astype(bool)  # 3x3 windows seeing a flip
        assert float(flipped.mean()) <= 1e-3, float(flipped.mean())
        np.testing.assert_array_equal(np.where(touched, 0, eng_out), np.where(touched, 0, fake_out))


def test_fusion_and_metadata(shared_data, recipes, tmp_path):
    recipe = recipes(4)
    model = load_model(_weights(shared_data))
    path = export_quantized(model, recipe, "ort", TILE, tmp_path / "imdn_w4a4.onnx")
    convs = {s.name.rsplit(".", 1)[0] for s in recipe.sites if s.name.endswith(".output")}
    assert convs, "calibration placed no conv output sites"
    counts = optimized_op_counts(path)
    assert counts["QLinearConv"] == len(convs), counts
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["srq.target"] == "ort"
    assert json.loads(meta["srq.site_bits"]) == {s.name: s.bits for s in recipe.sites}
    assert len(meta["srq.recipe_sha256"]) == 64 and meta["srq.fingerprint"] == model.fingerprint


_FIRST_CONV = ("the FP first conv (fea_conv) rounds differently in ORT (MLAS) and PyTorch; at W8A8 the rare IMDB1.c1 "
               "input-level flips it causes grow through the 8-bit chain (docs/export-parity.md: 137 dB with the "
               "engine's fea_conv output injected)")


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, pytest.param(8, marks=pytest.mark.xfail(strict=True, reason=_FIRST_CONV))])
def test_output_parity(shared_data, lr_images, recipes, bits, tmp_path):
    """With the FP first conv (2DQuant's placement) parity is close, not exact: how many input levels
    of IMDB1.c1 flip depends on MLAS's float32 conv kernel, so on the CPU. Measured on these tiles at
    W4A4: 0 values off by more than 1/255 on an AVX2 Zen 3 (137 dB, docs/export-parity.md), 0.56 %
    (64.0 dB) on an AVX-512 Zen 4 (2026-12-06, the same code). The exact variant is ``test_output_parity_is_exact_with_the_first_conv_quantized``."""
    recipe = recipes(bits)
    path = export_quantized(load_model(_weights(shared_data)), recipe, "ort", TILE, tmp_path / "m.onnx")
    psnr, frac = _parity(shared_data, recipe, path, _tiles(lr_images))
    assert psnr >= 55 and frac <= 1e-2, (psnr, frac)


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "float_output", "layer_bits"),
                         [(8, (), ()), (4, (), ()), (8, ("LR_conv",), ()),
                          (4, ("LR_conv",), ("LR_conv=w8a8", "IMDB*.c5=w8a8", "c.0=w8a8"))],
                         ids=["w8a8", "w4a4", "w8a8-LR_conv-float", "w4a4-mixed-8bit"])
def test_output_parity_is_exact_with_the_first_conv_quantized(shared_data, lr_images, recipes, bits, float_output,
                                                               layer_bits, tmp_path):
    """With ``first_conv_bits=8`` the first conv is an integer ``ConvInteger`` with a float output
    (exact accumulator, then the same Cast and float32 multiply as calib), and the CCA sigmoids are
    calib's tables, so every level matches on Set5 and demo tiles and what is left is the float32
    rounding of the FP upsampler (~137 dB). ``float_output`` convs (the body-end ``LR_conv``, whose
    8-bit weights become symmetric for it) run the same way, also in a mixed W4A4 model whose
    ``layer_bits`` layers are 8-bit."""
    recipe = recipes(bits, 8, float_output, layer_bits)
    if layer_bits:
        assert {recipe.site(f"{p}.weight_q").bits for p in ("LR_conv", "IMDB3.c5", "c.0")} == {8}
        assert all(recipe.site(f"{p}.weight_q").symmetric for p in ("LR_conv", "IMDB3.c5", "c.0"))
        assert recipe.site("IMDB3.c4.weight_q").bits == 4
    names = {s.name for s in recipe.sites}
    assert "fea_conv.output" not in names and all(f"{p}.output" not in names for p in float_output)
    assert all(recipe.site(f"{p}.weight_q").symmetric for p in float_output)
    path = export_quantized(load_model(_weights(shared_data)), recipe, "ort", TILE, tmp_path / "m.onnx")
    counts = optimized_op_counts(path)
    assert counts["ConvInteger"] == 1 + len(float_output) and counts["QLinearConv"] == len(
        [s for s in recipe.sites if s.name.endswith(".output")]), counts
    assert counts["Gather"] == 6 and "Sigmoid" not in counts  # the CCA gates read calib's sigmoid tables
    demo = [torch.from_numpy(s.lr.astype(np.float32) / 255).permute(2, 0, 1)[None, :, y:y + TILE[0], x:x + TILE[1]]
            .contiguous() for s in open_dataset("builtin:demo", 2) for (y, x) in ((40, 40), (100, 140))]
    psnr, frac = _parity(shared_data, recipe, path, _tiles(lr_images) + demo)
    assert psnr >= 120 and frac == 0, (psnr, frac)


def test_packed_weights_same_output_smaller_file(shared_data, lr_images, recipes, tmp_path):
    recipe = recipes(4)
    model = load_model(_weights(shared_data))
    int8 = export_quantized(model, recipe, "ort", TILE, tmp_path / "int8.onnx")
    packed = export_quantized(model, recipe, "ort", TILE, tmp_path / "packed.onnx", weights="packed")
    assert packed.stat().st_size < 0.7 * int8.stat().st_size
    types = {t.data_type for t in onnx.load(packed).graph.initializer}
    assert onnx.TensorProto.UINT4 in types
    x = _tiles(lr_images)[0].numpy()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # same float kernels for both
    a, b = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
            for p in (int8, packed))
    assert np.array_equal(a, b)


def test_trt_export_is_symmetric_and_ort_export_is_not(shared_data, recipes, tmp_path):
    recipe = recipes(4)
    model = load_model(_weights(shared_data))
    ort_path = export_quantized(model, recipe, "ort", TILE, tmp_path / "ort.onnx")
    trt_path = export_quantized(model, recipe, "trt", TILE, tmp_path / "trt.onnx")
    ort_rules = {v.rule for v in lint_model(onnx.load(ort_path), "trt")}
    assert {"trt-zero-point", "trt-type"} <= ort_rules
    trt_rules = {v.rule for v in lint_model(onnx.load(trt_path), "trt")}
    assert not trt_rules & {"trt-zero-point", "trt-type", "scale-positive", "qdq-both-inputs", "weight-axis"}
    lost = json.loads((tmp_path / "trt.bits_lost.json").read_text())
    assert set(lost) == {s.name for s in recipe.sites}
    assert all(lost[s.name] == 0 for s in recipe.sites if s.bits < 8)  # exact shift below 8 bits
    eight = [lost[s.name] for s in recipe.sites if s.bits == 8]  # conv outputs: widened, <= log2(255/127)
    assert eight and max(eight) > 0.5 and all(0 <= v <= np.log2(255 / 127) + 1e-6 for v in eight)


def test_ort_export_stores_low_bit_weights_as_int8_with_zero_point_0(shared_data, recipes, tmp_path):
    model = load_model(_weights(shared_data))
    for bits, dtype in ((4, onnx.TensorProto.INT8), (8, onnx.TensorProto.UINT8)):
        path = export_quantized(model, recipes(bits), "ort", TILE, tmp_path / f"w{bits}.onnx")
        graph = onnx.load(path).graph
        inits = {t.name: t for t in graph.initializer}
        weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and len(inits[n.input[0]].dims) == 4]
        assert weights and all(inits[n.input[0]].data_type == dtype for n in weights)
        if bits == 4:  # q - zp with zero point 0: |w| <= 15, so ORT's fast U8S8 kernels are exact
            assert all(not onnx.numpy_helper.to_array(inits[n.input[2]]).any() for n in weights)
            assert max(np.abs(onnx.numpy_helper.to_array(inits[n.input[0]])).max() for n in weights) <= 15


def test_lint_trt_passes_on_trt_export(shared_data, recipes, tmp_path, capsys):
    recipe = recipes(4)
    recipe.save(tmp_path / "r.json")
    assert main(["export", str(_weights(shared_data)), "--recipe", str(tmp_path / "r.json"), "--target", "trt",
                 "--tile", "48x48", "--out", str(tmp_path / "trt.onnx")]) == 0
    assert main(["lint", str(tmp_path / "trt.onnx"), "--target", "trt"]) == 0
    # the c4 outputs go into the distillation Concat: left float for TensorRT, recorded as 0 bits lost
    lost = json.loads((tmp_path / "trt.bits_lost.json").read_text())
    c4 = [k for k in lost if k.endswith(".c4.output")]
    assert len(c4) == 6 and all(lost[k] == 0 for k in c4)
    graph = onnx.load(tmp_path / "trt.onnx").graph
    concat_inputs = {i for n in graph.node if n.op_type == "Concat" for i in n.input}
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in concat_inputs for n in graph.node)
    # the CCA statistics, summed in float64 for ORT (a Cast to float64 per block for the sums, one for the
    # correctly rounded square root), are float32 for TensorRT
    to_double = [n for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.DOUBLE]
    assert to_double == [] and onnx.TensorProto.DOUBLE not in {t.data_type for t in graph.initializer}
    ort_graph = onnx.load(export_quantized(load_model(_weights(shared_data)), recipe, "ort", (48, 48),
                                           tmp_path / "ort.onnx")).graph
    assert sum(n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.DOUBLE for n in ort_graph.node) == 12
    assert main(["lint", str(tmp_path / "ort.onnx"), "--target", "trt"]) == 1
    assert "trt-float64" in capsys.readouterr().out
    fp_graph = onnx.load(export_fp_onnx(load_model(_weights(shared_data)), (48, 48), tmp_path / "fp.onnx")).graph
    assert not any(n.op_type == "Cast" for n in fp_graph.node)  # the FP model (speed baseline) sums in float32


def test_cli_refusals_leave_nothing(shared_data, recipes, tmp_path, capsys):
    recipe = recipes(4)
    recipe.save(tmp_path / "r.json")
    pan = shared_data / "weights/PAN/PANx2_DF2K.pth"
    out = tmp_path / "out" / "m.onnx"
    args = ["--recipe", str(tmp_path / "r.json"), "--target", "ort", "--out", str(out)]
    assert main(["export", str(pan), "--tile", "48x48", *args]) == 2
    assert "recipe is for IMDN x2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(_weights(shared_data)), "--tile", "48x0", *args])
    assert exc.value.code == 2 and "sizes must be positive" in capsys.readouterr().err
    (tmp_path / "r.json").write_text('{"schema": "srq.recipe", "schema_version": 99}')
    assert main(["export", str(_weights(shared_data)), "--tile", "48x48", *args]) == 2
    assert "schema version 99" in capsys.readouterr().err
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_unmatched_sites_are_listed_not_skipped(shared_data, recipes, tmp_path):
    recipe = recipes(4)
    bad = tuple(dataclasses.replace(s, name=s.name.replace("IMDB1.c1.", "IMDB1.c9.")) for s in recipe.sites)
    with pytest.raises(SrqError, match=r"no matching node .*IMDB1\.c9\.weight_q.*IMDB1\.c9\.input_q"):
        export_quantized(load_model(_weights(shared_data)), dataclasses.replace(recipe, sites=bad), "ort", TILE,
                         tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
