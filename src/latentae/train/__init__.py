"""Training. The generic part, for any model kind: ``loop.py`` (the edm2-shaped loop and
the task interface), ``state.py`` (progress record, checkpoint files), ``rundir.py``
(run folder), ``monitor.py`` (metrics log), ``ema.py``, ``dist.py`` (DDP), ``config.py``
(``LoopConfig`` and the value checks). The autoencoder on top: ``autoencoder.py`` (the
task and ``train()``), ``recipes.py`` (phases), ``data.py`` (images), ``validation.py``,
``demo.py``, ``plot.py``."""

from latentae.train.config import LoopConfig, TrainConfig, make_config, resolve_recipe
from latentae.train.recipes import RECIPES, LossWeights, Phase, Recipe, get_recipe

__all__ = ["RECIPES", "LoopConfig", "LossWeights", "Phase", "Recipe", "TrainConfig",
           "get_recipe", "make_config", "resolve_recipe"]
