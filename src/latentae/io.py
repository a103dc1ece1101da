"""Image I/O shared by evaluation, training and encode/decode.

Convention: tensors are ``(3, H, W)`` (or ``(B, 3, H, W)``) floats in [-1, 1]; images on
disk are 8-bit RGB. The one quantization rule, used by every metric and every saved
image, is ``round(clamp(127.5·(x+1), 0, 255))`` (``docs/evaluation.md``, "Protocol").
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from latentae.errors import InputError
from latentae.files import atomic_write_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class CorruptImageError(InputError):
    """An image file that exists but cannot be decoded."""


class ImageTooLargeError(CorruptImageError):
    """An image over PIL's pixel limit (a decompression bomb, or a really huge image):
    training skips and counts it like a corrupt file; elsewhere it is this message."""


def set_max_image_pixels(limit: int | None) -> None:
    """Raise (or lower) the pixel count over which an image is refused as a possible
    decompression bomb (``--max-image-pixels``; PIL's default is 89,478,485, refused
    outright above twice that). ``None`` keeps the current limit."""
    if limit is not None:
        if limit < 1:
            raise InputError(f"--max-image-pixels must be >= 1, got {limit}")
        Image.MAX_IMAGE_PIXELS = int(limit)


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files (jpg/jpeg/png/webp/bmp/tif) under ``folder``.

    Raises ``InputError`` naming the folder when it is missing or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a directory: pass a folder of images")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern)
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return files


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode != "I" or a.max() > 255 else 255.0
        a = np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        img = Image.fromarray(a, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # composite transparency on white, not on black
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB (grayscale, palette, RGBA, 16-bit are converted;
    EXIF orientation applied). Raises ``CorruptImageError`` if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Image.DecompressionBombError as e:
        n, limit = (re.findall(r"\d+", str(e)) + ["?", "?"])[:2]
        raise ImageTooLargeError(
            f"cannot decode image {path}: it has {n} pixels, over the limit of {limit} (a "
            "decompression bomb?): if the image is genuine, pass --max-image-pixels N "
            "with N above its pixel count") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptImageError(f"cannot decode image {path}: {e}") from e


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB PIL image or ``(H, W, 3)`` uint8 array -> ``(3, H, W)`` float32 in [-1, 1]."""
    a = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"to_tensor expects an RGB image or (H, W, 3) uint8 array, "
                         f"got {a.dtype} {a.shape}")
    t = torch.from_numpy(a.copy()).permute(2, 0, 1).float()  # (3, H, W) in [0, 255]
    return t / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 by exactly ``round(clamp(127.5·(x+1), 0, 255))``.

    Rounding is half-to-even (``torch.round``); computed in float32 whatever ``x``'s dtype.
    """
    return torch.round(torch.clamp(127.5 * (x.float() + 1.0), 0.0, 255.0)).to(torch.uint8)


def _to_hwc_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            return x if x.ndim == 2 or x.shape[-1] in (1, 3, 4) else x.transpose(1, 2, 0)
        x = torch.from_numpy(x)
    x = x.detach().cpu()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    u = x if x.dtype == torch.uint8 else to_uint8(x)
    return u.permute(1, 2, 0).numpy().squeeze(-1) if u.shape[0] == 1 else u.permute(1, 2, 0).numpy()


def save_image(x: torch.Tensor | np.ndarray | Image.Image, path: str | os.PathLike) -> None:
    """Write a PNG atomically. ``x``: PIL image, uint8 ``(H, W, 3)`` array, or a tensor
    ``(3, H, W)`` / ``(1, 3, H, W)`` in [-1, 1] (uint8 tensors are taken as-is)."""
    path = Path(path)
    img = x if isinstance(x, Image.Image) else Image.fromarray(_to_hwc_uint8(x))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def resize_shortest(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shortest side is ``size`` (PIL bicubic), keeping the aspect ratio."""
    w, h = img.size
    s = size / min(w, h)
    new = (max(size, round(w * s)), max(size, round(h * s)))
    return img if new == (w, h) else img.resize(new, Image.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central ``size``×``size`` square (offsets rounded down, as PIL/torchvision)."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """ADM's ``center_crop_arr`` (guided-diffusion, the DiT and DC-AE data pipelines, the
    ADM reference batches): halve with a box filter while the shortest side is at least
    ``2·size``, then the shortest side to ``size`` (PIL bicubic), then the central square."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    return center_crop(resize_shortest(img, size), size)


def resize_random_crop(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """Shortest side resized to ``size`` (PIL bicubic), then a random square."""
    img = resize_shortest(img, size)
    w, h = img.size
    left, top = rng.randint(0, w - size), rng.randint(0, h - size)
    return img.crop((left, top, left + size, top + size))


def image_grid(rows: Sequence[Sequence[Image.Image | torch.Tensor]], pad: int = 2,
               fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Tile images (PIL or ``(3, H, W)`` tensors in [-1, 1]) row by row into one image.

    Cells take the largest width/height present; ``pad`` pixels of ``fill`` between them.
    """
    cells = [[c if isinstance(c, Image.Image) else Image.fromarray(_to_hwc_uint8(c))
              for c in row] for row in rows]
    if not cells or not any(cells):
        raise ValueError("image_grid needs at least one image")
    cw = max(c.size[0] for row in cells for c in row)
    ch = max(c.size[1] for row in cells for c in row)
    ncol = max(len(row) for row in cells)
    size = (ncol * cw + (ncol + 1) * pad, len(cells) * ch + (len(cells) + 1) * pad)
    grid = Image.new("RGB", size, fill)
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            grid.paste(c.convert("RGB"), (pad + j * (cw + pad), pad + i * (ch + pad)))
    return grid


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images of a folder as ``(tensor (3, R, R) in [-1, 1], index)``.

    Each image is resized so its shortest side is ``resolution`` (PIL bicubic) and cropped
    to a square (``crop="center"`` or ``"random"``); ``flip`` mirrors at random. A corrupt
    file is recorded in ``corrupt`` (its path) and replaced by the next decodable file, so
    a run does not crash; if every file is corrupt a ``ValueError`` is raised. The
    returned index is the file actually read. With DataLoader workers each worker fills
    its own copy of ``corrupt``; use ``num_workers=0`` where the count matters.
    """

    def __init__(self, folder: str | os.PathLike, resolution: int, crop: str = "center",
                 flip: bool = False, files: Sequence[Path] | None = None) -> None:
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.folder = Path(folder)
        self.files = list(files) if files is not None else list_images(folder)
        self.resolution, self.crop, self.flip = resolution, crop, flip
        self.corrupt: list[Path] = []

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Image.Image:
        """The cropped RGB image at ``index`` (raises ``CorruptImageError``)."""
        img = load_image(self.files[index])
        # Random choices come from torch's RNG: DataLoader seeds it per worker and epoch,
        # and torch.manual_seed makes a run reproducible.
        rng = random.Random(int(torch.randint(0, 2**62, ())))
        if self.crop == "center":
            img = resize_center_crop(img, self.resolution)
        else:
            img = resize_random_crop(img, self.resolution, rng)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.files)):
            i = (index + k) % len(self.files)
            try:
                return to_tensor(self.load(i)), i
            except CorruptImageError:
                if self.files[i] not in self.corrupt:
                    self.corrupt.append(self.files[i])
        raise ValueError(f"every image in {self.folder} is corrupt ({len(self.files)} files)")
