"""Training: recipes as phases, a visible loop, resumable state, thin DDP."""

from latentae.train.config import TrainConfig, make_config, resolve_recipe
from latentae.train.recipes import RECIPES, LossWeights, Phase, Recipe, get_recipe

__all__ = ["RECIPES", "LossWeights", "Phase", "Recipe", "TrainConfig", "get_recipe",
           "make_config", "resolve_recipe"]
