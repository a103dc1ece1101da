"""Converters between latentae models and diffusers autoencoders: explicit key and
config maps, tested both ways against diffusers itself.

- ``convert.kl``: SD-VAE <-> ``AutoencoderKL`` (a key map of regular expressions);
- ``convert.dc``: DC-AE <-> ``AutoencoderDC`` (a key map generated from the config);
- ``convert.diffusers_dir``: the diffusers directory (``config.json`` +
  ``diffusion_pytorch_model.safetensors``), read and written without diffusers.

Which converter a directory needs, and the one loader over all formats, is
``latentae.pretrained``; this package imports nothing above the models.
"""
