"""The calibration recipe: the versioned calibrate -> export contract (JSON + safetensors sidecar).

Files: ``<name>.json`` and ``<name>.safetensors`` beside it (the sidecar always exists, possibly
empty). Both are written to temporary files and renamed, sidecar first, so a reader never sees
a JSON without its arrays.

JSON (schema ``srq.recipe``, version 2: version 1 had no conv output sites)::

    {
      "schema": "srq.recipe", "schema_version": 2, "srq_version": "0.1.0",
      "model": {"arch": "SwinIR", "scale": 2, "fingerprint": "<sha256 of the FP state dict>"},
      "placement": {"policy": "2dquant", "w_bits": 4, "a_bits": 4, "symmetric": false,
                    "weight_symmetric": false, "weight_symmetric_8bit": false,
                    "weight_granularity": "channel", "include": [],
                    "exclude": [], "one_direction": true, "one_direction_sites": [...],
                    "bias_correction": false, "beta_sites": "all", "simulate_int32_bias": true,
                    "conv_output_bits": 8,
                    "first_conv_bits": null, "float_output": [], "sigmoid_tables": true,
                    "integer_gates": false, "gate_products": true, "shared_inputs": false, "integer_residuals": false,
                    "integer_concats": false, "integer_activations": false, "qkv": "split",
                    "layer_bits": ["LR_conv=w8a8"]},
      "sites": [ {site}, ... ],
      "calibration": {"method": "sorted", "data": "builtin:calib", "seed": 0, "iterations": 0,
                      "wall_time_s": 12.3, "loss_curve": [], "settings": {...}}
    }

One site::

    {"name": "layers.0.residual_group.blocks.0.attn.qkv.q.weight_q",   # module path of the quantizer
                                                  # (<conv>.output: the conv's requantized output)
     "kind": "weight" | "activation",
     "op": "linear" | "conv2d" | "matmul" | "sigmoid" | "add" | "mul" | "concat" | "leaky_relu",
                                                  # the consuming op (input a/b by role for matmul); sigmoid /
                                                  # add / mul / concat / leaky_relu: <path>.output of an integer
                                                  # gate / residual / product / concat / activation
     "bits": 4, "symmetric": false, "narrow": false, "qmin": 0, "qmax": 15,
     "granularity": "tensor" | "channel", "axis": null | 0,   # axis of the quantized tensor
     "one_direction": false,
     "lb": <number> | {"sidecar": "<name>.lb"},  "ub": ...,          # float32 bounds
     "scale": ..., "zero_point": ...,  # snapped engine parameters: scale float32 > 0, zp integer
     "beta": null | <number> | {"sidecar": "<name>.beta"}}             # Q(v - beta) + beta

Per-tensor values are JSON numbers (float32 values written exactly); per-channel values are
``(C,)`` arrays in the sidecar under ``<site name>.<field>`` (``zero_point`` as int32).
``scale``/``zero_point`` are derived from ``lb``/``ub`` by ``srq.calib.quantizer.qparams`` (the
range widened to include 0); the export uses them as they are. The placement's
``weight_symmetric``, ``weight_symmetric_8bit``, ``first_conv_bits``, ``float_output``, ``sigmoid_tables``,
``qkv``, ``layer_bits``, ``beta_sites``, ``integer_gates``, ``shared_inputs``, ``integer_residuals``,
``integer_concats`` and ``integer_activations`` (added in 0.1.0 without a schema change) default to false / false /
null / [] / false / "split" / [] / "all" / false / false / false / false / false when absent (``gate_products``,
true when absent, only steers placement: the site list says which products have sites), which is how older
recipes were made; each
site carries its own format either way. ``sigmoid_tables``: a sigmoid reading a requantized conv
output is the table ``srq.calib.quantizer.level_table(sigmoid, ...)`` of that output's levels, in
calibration (``srq.calib.layers.TableSigmoid``) and in the ORT export (``Gather``).
``integer_gates``: a sigmoid that follows a requantized conv on a spatial map, or gates a tensor on a grid
(IMDN's per-channel attention under ``integer_concats``), also gets an output site ``<sigmoid path>.output`` (op ``"sigmoid"``, at
``conv_output_bits``, searched and trained like any activation site); its table is
``srq.calib.quantizer.table_levels`` of that grid, and the product of an arch's ``Gate`` is read by
its one consuming layer as ONNX Runtime's ``QLinearMul`` computes it
(``srq.calib.quantizer.qlinear_mul_levels``); an arch's ``Gate(requantized=True)`` of such a gate and a
requantized conv output has its own output site ``<gate path>.output`` (op ``"mul"``) instead, the same
kernel's output grid (PAN's HR pixel attention). A gate site whose sigmoid does not read a
requantized conv output is inert (calibration and export both leave that sigmoid float).
``shared_inputs``: layers that read one tensor had one input quantizer in calibration; the recipe
lists it under each layer's site name with equal values, and loading it back needs nothing more.
``integer_residuals``: an arch's ``Residual`` sum (``srq.zoo.Residual``) has an output site
``<residual path>.output`` (op ``"add"``, at ``conv_output_bits``); when both of its inputs are on
grids the sum is ONNX Runtime's ``QLinearAdd`` (``srq.calib.quantizer.qlinear_add_levels``), and a
layer reading it at that many bits lists an input site with the residual's values. ``integer_concats``: an
arch's ``Concat`` (``srq.zoo.Concat``) has an output site ``<concat path>.output`` (op ``"concat"``, at
``conv_output_bits``), ONNX Runtime's ``QLinearConcat``; a ``ChannelContrast`` reading it sums its levels exactly
(``srq.calib.layers.level_contrast``), in calibration and in the engine. ``integer_activations``: an
activation module's output site ``<act path>.output`` (op ``"leaky_relu"``, ONNX Runtime's ``QLinearLeakyRelu``);
the layers that read it list input sites with its values. ONNX
Runtime's int32 bias of a quantized Conv/Linear is ``round_half_even(bias / float32(s_x * s_w))``
(see ``srq.calib.layers``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

import srq
from srq.calib.quantizer import FakeQuantizer, QuantFormat
from srq.calib.sites import PlacementConfig, place_at
from srq.errors import SrqError

SCHEMA = "srq.recipe"
# ops of the ``<path>.output`` sites that belong to no Conv / Linear layer (gates, residuals, products, concats,
# activations): placed by module type, not as layers
MODULE_OUTPUT_OPS = ("sigmoid", "add", "mul", "concat", "leaky_relu")
SCHEMA_VERSION = 2
_ARRAYS = ("lb", "ub", "scale", "zero_point", "beta")


@dataclass(frozen=True)
class ModelInfo:
    """Which FP model a recipe belongs to (``SRModel``'s arch, scale and weight fingerprint)."""

    arch: str
    scale: int
    fingerprint: str

    @classmethod
    def of(cls, model: Any) -> ModelInfo:
        """From anything with ``arch``, ``scale`` and ``fingerprint`` (an ``srq.zoo.SRModel``)."""
        return cls(str(model.arch), int(model.scale), str(model.fingerprint))


@dataclass(frozen=True, eq=False)
class SiteParams:
    """One quantizer's recipe entry; arrays are float32 (``zero_point`` int32), shape ``()`` or ``(C,)``."""

    name: str
    kind: str
    op: str
    bits: int
    symmetric: bool
    narrow: bool
    qmin: int
    qmax: int
    granularity: str
    axis: int | None
    one_direction: bool
    lb: np.ndarray
    ub: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    beta: np.ndarray | None

    @classmethod
    def of(cls, q: FakeQuantizer) -> SiteParams:
        scale, zp = q.qparams()
        arr = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        return cls(q.site, q.kind, q.op, q.fmt.bits, q.fmt.symmetric, q.fmt.narrow, q.fmt.qmin, q.fmt.qmax,
                   "tensor" if q.axis is None else "channel", q.axis, q.one_direction,
                   arr(q.lb), arr(q.ub), arr(scale), zp.detach().cpu().numpy().astype(np.int32),
                   None if q.beta is None else arr(q.beta))


@dataclass(frozen=True)
class CalibMeta:
    """How the recipe was made: method, data spec, seed, DQC iterations, wall time (s), loss per iteration."""

    method: str
    data: str
    seed: int
    iterations: int = 0
    wall_time_s: float = 0.0
    loss_curve: tuple[float, ...] = ()
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Recipe:
    """A calibrated quantization of one FP model (see the module docstring for the file format)."""

    model: ModelInfo
    placement: PlacementConfig
    sites: tuple[SiteParams, ...]
    calibration: CalibMeta
    srq_version: str = srq.__version__
    schema_version: int = SCHEMA_VERSION

    def site(self, name: str) -> SiteParams:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def check_matches(self, model: Any) -> None:
        """Refuse a model (``SRModel`` or ``ModelInfo``) other than the one this recipe was calibrated on."""
        other = ModelInfo.of(model)
        if (other.arch, other.scale) != (self.model.arch, self.model.scale):
            raise SrqError(f"recipe is for {self.model.arch} x{self.model.scale}, "
                           f"not for this {other.arch} x{other.scale} model")
        if other.fingerprint != self.model.fingerprint:
            raise SrqError(f"recipe is for other {self.model.arch} weights (fingerprint "
                           f"{self.model.fingerprint[:12]}..., this model {other.fingerprint[:12]}...)")

    def save(self, path: str | Path) -> None:
        """Write ``path`` (JSON) and its ``.safetensors`` sidecar atomically."""
        path = Path(path)
        sidecar = path.with_suffix(".safetensors")
        tensors: dict[str, np.ndarray] = {}
        sites = []
        for s in self.sites:
            entry = {k: v for k, v in asdict_shallow(s).items() if k not in _ARRAYS}
            for k in _ARRAYS:
                value = getattr(s, k)
                if value is None:
                    entry[k] = None
                elif value.ndim == 0:
                    entry[k] = int(value) if k == "zero_point" else float(value)
                else:
                    tensors[f"{s.name}.{k}"] = np.ascontiguousarray(value)
                    entry[k] = {"sidecar": f"{s.name}.{k}"}
            sites.append(entry)
        doc = {"schema": SCHEMA, "schema_version": self.schema_version, "srq_version": self.srq_version,
               "model": asdict(self.model), "placement": asdict(self.placement), "sites": sites,
               "calibration": asdict(self.calibration)}
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic(sidecar, lambda tmp: save_file(tensors, tmp, metadata={"schema": SCHEMA}))
        _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1) + "\n"))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a recipe; ``SrqError`` naming the file and the problem otherwise."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SrqError(f"{path}: cannot read recipe ({e})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise SrqError(f"{path}: not an srq recipe (schema {doc.get('schema') if isinstance(doc, dict) else None!r})")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise SrqError(f"{path}: recipe schema version {doc.get('schema_version')!r}, this srq reads "
                           f"version {SCHEMA_VERSION}; recalibrate with this srq")
        sidecar = path.with_suffix(".safetensors")
        if not sidecar.is_file():
            raise SrqError(f"{path}: sidecar {sidecar.name} is missing (per-channel arrays live there)")
        try:
            tensors = load_file(str(sidecar))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise SrqError(f"{sidecar}: cannot read recipe arrays ({e})") from None
        try:
            sites = tuple(_site_from_json(e, tensors) for e in doc["sites"])
            placement = {"sigmoid_tables": False, **doc["placement"]}  # absent: made before tables existed
            placement = PlacementConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in placement.items()})
            calib = doc["calibration"]
            calib = CalibMeta(**{**calib, "loss_curve": tuple(calib.get("loss_curve", ()))})
            recipe = cls(ModelInfo(**doc["model"]), placement, sites, calib, str(doc["srq_version"]), SCHEMA_VERSION)
        except SrqError as e:
            raise SrqError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise SrqError(f"{path}: malformed recipe ({type(e).__name__}: {e})") from None
        if len({s.name for s in sites}) != len(sites):
            raise SrqError(f"{path}: duplicate site names")
        return recipe


def asdict_shallow(s: SiteParams) -> dict[str, Any]:
    return {k: getattr(s, k) for k in SiteParams.__dataclass_fields__}


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _site_from_json(e: dict, tensors: dict[str, np.ndarray]) -> SiteParams:
    name = e["name"]
    fmt = QuantFormat(int(e["bits"]), bool(e["symmetric"]), bool(e["narrow"]))
    if (fmt.qmin, fmt.qmax) != (e["qmin"], e["qmax"]):
        raise SrqError(f"site {name}: qmin/qmax {e['qmin']}/{e['qmax']} do not match {fmt}")
    channel = e["granularity"] == "channel"
    if e["granularity"] not in ("tensor", "channel") or channel != (e["axis"] is not None):
        raise SrqError(f"site {name}: granularity {e['granularity']!r} with axis {e['axis']!r}")
    arrays: dict[str, np.ndarray | None] = {}
    for k in _ARRAYS:
        v = e[k]
        if v is None:
            if k != "beta":
                raise SrqError(f"site {name}: {k} is missing")
            arrays[k] = None
            continue
        if isinstance(v, dict):
            key = v.get("sidecar")
            if key not in tensors:
                raise SrqError(f"site {name}: {k} array {key!r} is not in the sidecar")
            v = tensors[key]
        arr = np.asarray(v, dtype=np.int32 if k == "zero_point" else np.float32)
        if k != "zero_point" and not np.isfinite(arr).all():
            raise SrqError(f"site {name}: {k} is not finite")
        if k == "zero_point" and isinstance(e[k], float) and not float(e[k]).is_integer():
            raise SrqError(f"site {name}: zero_point {e[k]} is not an integer")
        arrays[k] = arr
    shape = arrays["lb"].shape
    if channel != (len(shape) == 1) or any(a is not None and a.shape != shape for a in arrays.values()):
        raise SrqError(f"site {name}: arrays {({k: None if a is None else a.shape for k, a in arrays.items()})} "
                       f"do not fit granularity {e['granularity']}")
    if not (arrays["scale"] > 0).all():
        raise SrqError(f"site {name}: scale must be positive")
    zp = arrays["zero_point"]
    if (zp < min(fmt.qmin, 0)).any() or (zp > max(fmt.qmax, 0)).any() or (fmt.symmetric and zp.any()):
        raise SrqError(f"site {name}: zero_point out of range for {fmt}")
    return SiteParams(name, str(e["kind"]), str(e["op"]), fmt.bits, fmt.symmetric, fmt.narrow, fmt.qmin,
                      fmt.qmax, e["granularity"], e["axis"], bool(e["one_direction"]), **arrays)


def apply_recipe(model: torch.nn.Module, recipe: Recipe) -> dict[str, FakeQuantizer]:
    """Fake-quantize ``model`` in place as ``recipe`` says; returns ``{site: quantizer}`` in ``"quant"`` mode.

    Placement follows the recipe's site list (no policy re-run); the model must be the FP model
    the recipe was made for (call ``recipe.check_matches`` with its ``SRModel`` first).
    """
    # gates, residuals, products, concats and activations: by placement
    layer_paths = sorted({s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op not in MODULE_OUTPUT_OPS})
    wanted = {s.name for s in recipe.sites}
    # a layer without an output site in the recipe gets none (e.g. the first conv under first_conv_bits)
    no_output = replace(recipe.placement, conv_output_bits=None)
    gates = tuple(s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op == "sigmoid")
    residuals = tuple(s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op == "add")
    products = tuple(s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op == "mul")
    concats = tuple(s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op == "concat")
    activations = {s.name.rsplit(".", 1)[0]: s.bits for s in recipe.sites if s.op == "leaky_relu"}
    sites = place_at(model, recipe.placement, layer_paths,
                     {p: no_output for p in layer_paths if f"{p}.output" not in wanted}, gates,
                     residuals=residuals, products=products, concats=concats, activations=activations)
    if set(sites) != wanted:
        missing, extra = sorted(wanted - set(sites)), sorted(set(sites) - wanted)
        raise SrqError(f"recipe does not fit this model: sites missing in the model {missing[:3]}, "
                       f"not in the recipe {extra[:3]}")
    for s in recipe.sites:
        q = sites[s.name]
        if (q.kind, q.axis) != (s.kind, s.axis) or q.lb.shape != s.lb.shape:
            raise SrqError(f"recipe site {s.name}: {s.kind} {s.granularity} {s.lb.shape} does not fit the "
                           f"model's {q.kind} quantizer of shape {tuple(q.lb.shape)}")
        q.fmt = QuantFormat(s.bits, s.symmetric, s.narrow)
        q.one_direction = s.one_direction
        q.beta = None if s.beta is None else torch.nn.Parameter(torch.from_numpy(s.beta.copy()))
        q.set_bounds(torch.from_numpy(s.lb.copy()), torch.from_numpy(s.ub.copy()))
        scale, zp = (t.detach().numpy() for t in q.qparams())
        if not (np.array_equal(scale, s.scale) and np.array_equal(zp.astype(np.int32), s.zero_point)):
            raise SrqError(f"recipe site {s.name}: scale/zero_point do not follow from lb/ub")
        q.mode = "quant"
    return sites


def _site_op(name: str, q: FakeQuantizer, sites: dict[str, FakeQuantizer]) -> str:
    """The op of site ``name``: a layer input's is its layer's (the op of that layer's weight site; it may
    share another site's quantizer, e.g. a residual's output), any other site's its quantizer's."""
    weight = sites.get(f"{name.rpartition('.')[0]}.weight_q")
    return weight.op if weight is not None and name.endswith(".input_q") else q.op


def recipe_from_sites(sites: dict[str, FakeQuantizer], model: ModelInfo, placement: PlacementConfig,
                      calibration: CalibMeta) -> Recipe:
    """Snapshot the current bounds of ``sites`` into a ``Recipe``."""
    params = tuple(replace(SiteParams.of(q), name=name, op=_site_op(name, q, sites)) for name, q in sites.items())
    for p in params:
        if not all(np.isfinite(getattr(p, k)).all() for k in ("lb", "ub", "scale")):
            raise SrqError(f"site {p.name}: non-finite bounds after calibration")
    return Recipe(model, placement, params, calibration)
