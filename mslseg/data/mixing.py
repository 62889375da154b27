"""Mixing and strong augmentation for self-training, on normalised float batches (torch).

Facts from the reference code, which these functions follow (the code is ours):

- ClassMix (DACS, Tranheden et al. WACV 2021; vikolss/DACS `trainUDA.py`, lhoyer/DAFormer
  `dacs_transforms.get_class_masks`): per source image, ceil(n/2) of its n present classes
  (`int((n + n % 2) / 2)`), drawn without replacement; their pixels are pasted onto a target image.
  The references count 255 as a class (and DAFormer takes the classes of the whole batch); here
  255 never counts and each image uses its own classes.
- Colour jitter (DACS `transformsgpu.colorJitter`, DAFormer `dacs_transforms.color_jitter`): kornia
  `ColorJitter(brightness=s, contrast=s, saturation=s, hue=s)` applied when U(0,1) > 0.2, i.e. with
  p = 0.8, on the image denormalised to [0, 1]; s = 0.25 in DACS, 0.2 in DAFormer's configs
  (`color_jitter_strength=0.2, color_jitter_probability=0.2`). Here torchvision's factor
  definitions (brightness/contrast/saturation factor ~ U(1-s, 1+s), hue shift ~ U(-s, s) of the
  hue circle) in a fixed order; kornia 0.5's ColorJitter (which the references pinned) differs in
  detail.
- Gaussian blur (same files, `gaussian_blur`): applied when U(0,1) > 0.5 (p = 0.5), sigma ~
  U(0.15, 1.15), kernel size ~ 0.1 x the image side rounded down to odd
  (`floor(ceil(0.1 H) - 0.5 + ceil(0.1 H) % 2)`), kornia's reflect border.
- MIC (Hoyer et al. CVPR 2023; lhoyer/MIC `masking_transforms.BlockMaskGenerator`): a grid of
  64 x 64 blocks, each masked with probability 0.7 (kept where U(0,1) > 0.7), masked pixels
  multiplied by 0 in normalised space (the dataset mean colour). MIC resizes a round(H/64) grid to
  the image; here blocks stay 64 x 64, aligned at the top-left (the same when H, W are multiples).

Randomness comes only from the `generator` argument (a CPU `torch.Generator`), drawn on the CPU
and moved to the batch's device, so a seeded run is the same on CPU and CUDA and resumes bitwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mslseg.classes import IGNORE_INDEX
from mslseg.runtime.metadata import Normalization

JITTER_STRENGTH = 0.2  # DAFormer's configs (DACS's code: 0.25)
JITTER_P = 0.8  # applied when U(0,1) > 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.15, 1.15)
MIC_BLOCK = 64
MIC_RATIO = 0.7


def classmix_masks(source_labels: Tensor, generator: torch.Generator) -> Tensor:
    """Per image, the pixels of ceil(n/2) of its n present classes (255 excluded), chosen at random.

    source_labels: (N, H, W) integer. Returns (N, H, W) bool, True where the source is pasted.
    """
    n_img = source_labels.shape[0]
    flat = source_labels.reshape(n_img, -1).long()  # (N, HW)
    valid = flat != IGNORE_INDEX
    slots = int(flat[valid].max()) + 1 if valid.any() else 1
    index = torch.where(valid, flat, torch.zeros_like(flat))
    present = torch.zeros(n_img, slots, dtype=torch.bool, device=flat.device)
    present.scatter_(1, index, valid)  # (N, slots); ignore pixels scatter False into slot 0
    present = present.cpu()
    # a random order of each image's present classes: random keys, absent classes sorted last
    keys = torch.rand(n_img, slots, generator=generator).masked_fill(~present, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)  # (N, slots): position of each class in that order
    take = (present.sum(dim=1, keepdim=True) + 1) // 2  # ceil(n / 2)
    chosen = (present & (rank < take)).to(flat.device)  # (N, slots)
    mask = chosen.gather(1, index) & valid  # (N, HW)
    return mask.reshape(source_labels.shape)


def mix(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """`a` where `mask`, `b` elsewhere. mask (N, H, W) bool; a, b (N, H, W) labels/weights or
    (N, C, H, W) images (the mask is broadcast over channels)."""
    m = mask if a.dim() == mask.dim() else mask.unsqueeze(1)
    return torch.where(m, a, b)


def color_jitter(images: Tensor, norm: Normalization, generator: torch.Generator, *,
                 strength: float = JITTER_STRENGTH, p: float = JITTER_P) -> Tensor:
    """DACS's colour jitter on a normalised batch (N, 3, H, W), per image; returns a new batch.

    Denormalises with `norm` to [0, 1] RGB, scales brightness, contrast and saturation by factors
    ~ U(1-s, 1+s), shifts hue by ~ U(-s, s) of the circle (s = `strength`, capped at 0.5 for hue),
    clamps to [0, 1], normalises back. Each image is jittered with probability `p`. The draws
    happen whatever `strength` is, so a stream of batches stays aligned across settings.
    """
    n = images.shape[0]
    u = torch.rand(n, 5, generator=generator)  # (N, 5): apply, brightness, contrast, saturation, hue
    if strength == 0 or p == 0:
        return images
    apply = (u[:, 0] < p).to(images.device)
    factors = (1 - strength + 2 * strength * u[:, 1:4]).clamp(min=0).to(images)  # (N, 3)
    hue = (min(strength, 0.5) * (2 * u[:, 4] - 1)).to(images)  # (N,)
    rgb = _to_unit_rgb(images, norm)  # (N, 3, H, W) in [0, 1]
    out = (rgb * factors[:, 0, None, None, None]).clamp(0, 1)
    mean_gray = _gray(out).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    out = (mean_gray + factors[:, 1, None, None, None] * (out - mean_gray)).clamp(0, 1)
    gray = _gray(out)
    out = (gray + factors[:, 2, None, None, None] * (out - gray)).clamp(0, 1)
    out = _shift_hue(out, hue)
    jittered = _from_unit_rgb(out, norm)
    return torch.where(apply[:, None, None, None], jittered, images)


def gaussian_blur(images: Tensor, generator: torch.Generator, *, p: float = BLUR_P,
                  sigma: tuple[float, float] = BLUR_SIGMA) -> Tensor:
    """DACS's Gaussian blur on a batch (N, C, H, W), per image with probability `p`.

    sigma ~ U(sigma), kernel side ~ 0.1 x the image side rounded down to odd, reflect border.
    """
    n, c, h, w = images.shape
    u = torch.rand(n, 2, generator=generator)  # (N, 2): apply, sigma
    if p == 0:
        return images
    apply = (u[:, 0] < p).to(images.device)
    sig = (sigma[0] + (sigma[1] - sigma[0]) * u[:, 1]).to(images.device, torch.float32)  # (N,)
    ky, kx = _blur_kernel_size(h), _blur_kernel_size(w)
    x = images.float().reshape(1, n * c, h, w)
    x = _blur_1d(x, sig, ky, c, dim=2)
    x = _blur_1d(x, sig, kx, c, dim=3)
    blurred = x.reshape(n, c, h, w).to(images.dtype)
    return torch.where(apply[:, None, None, None], blurred, images)


def mic_mask(shape: tuple[int, ...], generator: torch.Generator, *, block: int = MIC_BLOCK,
             ratio: float = MIC_RATIO, device: torch.device | str | None = None) -> Tensor:
    """MIC's block mask for a batch of `shape` (N, C, H, W) or (N, H, W): (N, 1, H, W) float,
    0 on masked blocks (each with probability `ratio`), 1 elsewhere; blocks aligned at (0, 0)."""
    n, h, w = shape[0], shape[-2], shape[-1]
    grid = (torch.rand(n, 1, math.ceil(h / block), math.ceil(w / block), generator=generator) > ratio).float()
    full = grid.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[:, :, :h, :w]
    return full.to(device) if device is not None else full


def apply_mask(images: Tensor, mask: Tensor) -> Tensor:
    """images (N, C, H, W) normalised x mask (N, 1, H, W): masked pixels become 0 (the mean colour)."""
    return images * mask.to(images)


def _blur_kernel_size(side: int) -> int:
    k = math.ceil(0.1 * side)
    return k if k % 2 == 1 else max(k - 1, 1)


def _blur_1d(x: Tensor, sigma: Tensor, k: int, channels: int, *, dim: int) -> Tensor:
    """x (1, N*C, H, W) blurred along `dim` with one normalised Gaussian per image (sigma (N,))."""
    if k == 1:
        return x
    t = torch.arange(k, device=x.device, dtype=torch.float32) - (k - 1) / 2  # (k,)
    kern = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))  # (N, k)
    kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (N*C, k)
    half = k // 2
    if dim == 2:
        weight, pad = kern[:, None, :, None], (0, 0, half, half)
    else:
        weight, pad = kern[:, None, None, :], (half, half, 0, 0)
    mode = "reflect" if x.shape[dim] > half else "replicate"  # reflect needs a side longer than the pad
    return F.conv2d(F.pad(x, pad, mode=mode), weight, groups=x.shape[1])


def _to_unit_rgb(images: Tensor, norm: Normalization) -> Tensor:
    mean = torch.tensor(norm.mean, device=images.device, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(norm.std, device=images.device, dtype=torch.float32)[None, :, None, None]
    x = (images.float() * std + mean) / 255.0
    return x.flip(1) if norm.order == "bgr" else x


def _from_unit_rgb(rgb: Tensor, norm: Normalization) -> Tensor:
    x = rgb.flip(1) if norm.order == "bgr" else rgb
    mean = torch.tensor(norm.mean, device=rgb.device, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(norm.std, device=rgb.device, dtype=torch.float32)[None, :, None, None]
    return (x * 255.0 - mean) / std


def _gray(rgb: Tensor) -> Tensor:
    """ITU-R 601 luma, (N, 1, H, W), as torchvision's rgb_to_grayscale."""
    return (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).unsqueeze(1)


def _shift_hue(rgb: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of rgb (N, 3, H, W) in [0, 1] by shift (N,) turns, through HSV."""
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(dim=1)
    minc, _ = rgb.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift[:, None, None], 1.0)
    # HSV -> RGB: channel k is v - v*s*clamp(min(m, 4 - m), 0, 1) with m = (n_k + 6h) mod 6
    out = []
    for n_k in (5.0, 3.0, 1.0):
        m = torch.remainder(n_k + hue * 6, 6)
        out.append(maxc - maxc * sat * torch.clamp(torch.minimum(m, 4 - m), 0, 1))
    return torch.stack(out, dim=1)
