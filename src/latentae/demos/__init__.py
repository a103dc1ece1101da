"""The demos, above both tasks: ``autoencoder.py`` (``latentae demo``) and
``diffusion.py`` (``latentae demo --diffusion``, on the autoencoder demo's model)."""
