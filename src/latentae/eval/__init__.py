"""Evaluation: PSNR/SSIM, LPIPS, rFID (Inception port), MMD, latent statistics, reports.

The protocol of every metric is stated in ``docs/evaluation.md`` ("Protocol") and
recorded in each report (``latentae.eval.report``).
"""
