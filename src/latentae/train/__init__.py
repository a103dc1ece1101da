"""The autoencoder task on the generic engine (``latentae.engine``: loop, state, run
folder, metrics, EMA, DDP, image data): ``autoencoder.py`` (the task and ``train()``),
``config.py`` (``TrainConfig`` and its tables), ``recipes.py`` (phases),
``validation.py``, ``regression.py``, ``discriminator.py``, ``card.py``."""

from latentae.engine.config import LoopConfig
from latentae.train.config import TrainConfig, make_config, resolve_recipe
from latentae.train.recipes import RECIPES, LossWeights, Phase, Recipe, get_recipe

__all__ = ["RECIPES", "LoopConfig", "LossWeights", "Phase", "Recipe", "TrainConfig",
           "get_recipe", "make_config", "resolve_recipe"]
