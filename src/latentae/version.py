"""The package version: one place, read by ``pyproject.toml`` (``dynamic``), written into
every saved ``config.json`` and latent shard, printed by ``latentae --version``."""

__version__ = "0.1.0"
