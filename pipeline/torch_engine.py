"""A PyTorch model (FP or fake-quantized by a recipe) behind the runtime's ``Engine`` interface.

Lets the runtime's tiling run the calibrated model exactly as it runs the exported engine
(same tiles, same overlaps), so "engine vs fake-quant" compares like with like. Lives in
the pipeline, not in ``srq.runtime``, because the runtime never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from srq.runtime.engine import Engine


class TorchEngine(Engine):
    """``model`` (an ``srq.zoo`` SRModel) at a fixed LR tile; ``recipe`` fake-quantizes it."""

    def __init__(self, model, tile_hw: tuple[int, int], recipe=None):
        from srq.zoo.fixed_size import module_for_size

        module = module_for_size(model, tile_hw)
        if recipe is not None:
            from srq.calib.recipe import apply_recipe

            recipe.check_matches(model)
            if module is model.module:  # never fake-quantize the caller's FP module in place
                import copy

                module = copy.deepcopy(module)
            apply_recipe(module, recipe)
        self.module = module.eval()
        self.path = Path(str(model.source))
        c, s = model.in_channels, model.scale
        self.input_shape = (1, c, *tile_hw)
        self.output_shape = (1, c, tile_hw[0] * s, tile_hw[1] * s)
        self.input_name, self.output_name = "lr", "sr"

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
