"""The two diffusion studies, NOT RUN: they need the diffusion trainer
(``latentae diffusion train``), which is not on this branch. Declared here so the design
is fixed before they run:

- ``dcae-table1`` — DC-AE table 1: at equal token count (SD-VAE-f8 with patch 4,
  f16 p2, f32 p1 vs DC-AE-f32 p1) a small U-ViT on DC-AE latents reaches a better
  gFID. Design: each autoencoder trained to its plateau (``dcae_shortcuts`` /
  ``litevae_vs_sdvae`` runs), latents cached, the same U-ViT (``latentae.diffusion``
  ``uvit`` preset) trained for equal steps with 3 paired seeds, KID of 2,048 samples
  against held-out crops (``latentae.eval.generation``), paired bootstrap CI.
- ``litevae-table7`` — LiteVAE table 7: the same DiT on LiteVAE and SD-VAE latents of
  equal reconstruction quality reaches a similar gFID (an equivalence claim: the CI of
  the KID difference must lie inside a stated margin).
"""

from __future__ import annotations

import sys

from latentae.errors import StateError

STUDIES = {"dcae_table1": "DC-AE table 1 (equal tokens, U-ViT, KID of samples)",
           "litevae_table7": "LiteVAE table 7 (same DiT on LiteVAE vs SD-VAE latents)"}
NOT_RUN = ("not run: needs the diffusion trainer (latentae diffusion train); see "
           "latentae.studies.diffusion_studies for the design")


def main(argv: list[str] | None = None) -> int:
    raise StateError(NOT_RUN)


if __name__ == "__main__":
    sys.exit(main())
