"""Calibration stage: quantizer placement, FP observation, bound search, recipe (model -> recipe).

Public API::

    recipe = calibrate(fp_module, CalibConfig(placement=PlacementConfig(policy="body", w_bits=4, a_bits=4),
                                              search=SearchConfig(method="sorted"),
                                              dqc=DQCConfig(iterations=200)),
                       batches, ModelInfo.of(sr_model))
    recipe.save("recipe.json"); recipe = Recipe.load("recipe.json"); recipe.check_matches(sr_model)
    sites = apply_recipe(fp_module_copy, recipe)   # fake-quantized, in place
"""

from srq.calib.api import CalibConfig, calibrate
from srq.calib.data import calibration_crops
from srq.calib.dqc import DQCConfig, DQCResult, distill
from srq.calib.quantizer import FakeQuantizer, QuantFormat, fake_quant, qparams
from srq.calib.recipe import CalibMeta, ModelInfo, Recipe, SiteParams, apply_recipe
from srq.calib.search import SearchConfig, search_bounds
from srq.calib.sites import PlacementConfig, place_quantizers

__all__ = ["CalibConfig", "CalibMeta", "DQCConfig", "DQCResult", "FakeQuantizer", "ModelInfo", "PlacementConfig", "QuantFormat", "Recipe",
           "SearchConfig", "SiteParams", "apply_recipe", "calibrate", "calibration_crops", "distill", "fake_quant", "place_quantizers", "qparams",
           "search_bounds"]
