"""Batched, seeded data augmentations for SSL training.

Two families:

* :class:`MNIST1DAugment` — time-axis augmentations for 1-D signals (MNIST-1D, Greydanus
  2020), written in plain torch. They mirror how MNIST-1D itself is generated (a
  circular translation, a random scale, a linear shear, additive noise) plus a
  crop-and-resize and a smooth time warp. The pilot on this project found that the
  time-axis operations (shift, crop-and-resize, warp) are what make SimCLR learn; noise
  alone barely does.
* :class:`ImageAugment` — the SimCLR image recipe (Chen et al., ICML 2020, Appendix A)
  built from ``kornia.augmentation``: random resized crop, horizontal flip, colour
  jitter (p=0.8), random grayscale (p=0.2) and Gaussian blur, adapted to the image size
  and to the number of channels (grayscale images get brightness/contrast jitter only).

Both are callables ``aug(x, generator) -> x_aug`` that draw **all** their randomness
from the given ``torch.Generator`` (or from torch's global RNG when it is ``None``), so
training is reproducible on CPU: same generator state, same views.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["AUGMENTATIONS", "Augmentation", "ImageAugment", "MNIST1DAugment", "build_augment"]

Augmentation = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _uniform(
    low: float, high: float, shape: tuple[int, ...], generator: torch.Generator | None, device: Any
) -> torch.Tensor:
    """U(low, high) draws made on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=gen_device)
    return (low + (high - low) * u).to(device)


def _check_range(
    value: tuple[float, float], name: str, lo: float, hi: float
) -> tuple[float, float]:
    a, b = (float(value[0]), float(value[1]))
    if not (lo <= a <= b <= hi):
        raise ValueError(
            f"{name} must be a (low, high) pair with {lo} <= low <= high <= {hi}; got {value!r}."
        )
    return a, b


class MNIST1DAugment:
    """Random time-axis and amplitude augmentations for batches of 1-D signals.

    For an input of shape (B, L) or (B, C, L), each sample gets its own random draw of,
    in this order:

    1. **time warp**: output position ``u in [0, 1]`` reads source position
       ``u + (a / pi) * sin(pi * u)`` with ``a ~ U(-warp, warp)`` (monotone for
       ``warp < 1``, end points fixed);
    2. **crop-and-resize**: a window of relative length ``s ~ U(*crop_scale)`` at a
       uniform offset is stretched back to length L (linear interpolation);
    3. **shift**: a translation by ``t ~ U(-max_shift, max_shift)`` of the length,
       circular (``circular=True``, as MNIST-1D translates its digits) or zero-padded;
    4. **amplitude scaling** by ``U(*amplitude)``;
    5. **shear**: a linear trend ``c * linspace(-0.5, 0.5, L)`` with ``c ~ U(-shear, shear)``
       (MNIST-1D adds the same kind of trend);
    6. **Gaussian noise** with standard deviation ``noise_std`` (in the signal's units;
       MNIST-1D signals have unit variance).

    Steps 1-3 are one resampling of the signal: a single linear interpolation.

    Args:
        max_shift: largest translation as a fraction of the length, in [0, 1].
        circular: wrap around (True) or pad with zeros (False).
        crop_scale: range of the relative crop length, within (0, 1].
        warp: time-warp strength in [0, 1).
        amplitude: range of the multiplicative amplitude factor (positive).
        shear: largest linear-trend coefficient (>= 0).
        noise_std: standard deviation of the additive Gaussian noise (>= 0).
    """

    def __init__(
        self,
        *,
        max_shift: float = 0.25,
        circular: bool = True,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        warp: float = 0.3,
        amplitude: tuple[float, float] = (0.8, 1.2),
        shear: float = 0.3,
        noise_std: float = 0.05,
    ) -> None:
        if not 0.0 <= max_shift <= 1.0:
            raise ValueError(
                f"max_shift must be in [0, 1] (fraction of the length); got {max_shift}."
            )
        if not 0.0 <= warp < 1.0:
            raise ValueError(f"warp must be in [0, 1) to keep the warp monotone; got {warp}.")
        if shear < 0 or noise_std < 0:
            raise ValueError(f"shear and noise_std must be >= 0; got {shear} and {noise_std}.")
        self.max_shift = float(max_shift)
        self.circular = bool(circular)
        self.crop_scale = _check_range(crop_scale, "crop_scale", 1e-6, 1.0)
        self.warp = float(warp)
        self.amplitude = _check_range(amplitude, "amplitude", 1e-12, math.inf)
        self.shear = float(shear)
        self.noise_std = float(noise_std)

    def __repr__(self) -> str:
        return (
            f"MNIST1DAugment(max_shift={self.max_shift}, circular={self.circular}, "
            f"crop_scale={self.crop_scale}, warp={self.warp}, amplitude={self.amplitude}, "
            f"shear={self.shear}, noise_std={self.noise_std})"
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return one augmented view of ``x`` (same shape and dtype)."""
        squeeze = x.ndim == 2
        if squeeze:
            x = x.unsqueeze(1)
        if x.ndim != 3 or not x.is_floating_point():
            raise ValueError(
                f"MNIST1DAugment expects a float tensor of shape (B, L) or (B, C, L); got "
                f"{x.ndim}-D {x.dtype} shape {tuple(x.shape)}."
            )
        b, c, length = x.shape
        dev = x.device
        u = torch.linspace(0.0, 1.0, length, device=dev, dtype=x.dtype).expand(b, length)
        # 1. time warp (monotone, end points fixed)
        a = _uniform(-self.warp, self.warp, (b, 1), generator, dev).to(x.dtype)
        pos = u + (a / math.pi) * torch.sin(math.pi * u)
        # 2. crop-and-resize
        s = _uniform(*self.crop_scale, (b, 1), generator, dev).to(x.dtype)
        start = _uniform(0.0, 1.0, (b, 1), generator, dev).to(x.dtype) * (1.0 - s)
        pos = start + s * pos
        # 3. shift
        t = _uniform(-self.max_shift, self.max_shift, (b, 1), generator, dev).to(x.dtype)
        idx = (pos + t) * (length - 1)
        out = self._resample(x, idx)
        # 4.-6. amplitude, shear, noise
        amp = _uniform(*self.amplitude, (b, 1, 1), generator, dev).to(x.dtype)
        out = out * amp
        if self.shear > 0:
            coeff = _uniform(-self.shear, self.shear, (b, 1, 1), generator, dev).to(x.dtype)
            ramp = torch.linspace(-0.5, 0.5, length, device=dev, dtype=x.dtype)
            out = out + coeff * ramp
        if self.noise_std > 0:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn((b, c, length), generator=generator, device=gen_device)
            out = out + self.noise_std * noise.to(device=dev, dtype=x.dtype)
        return out.squeeze(1) if squeeze else out

    def _resample(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of x (B, C, L) at fractional indices idx (B, L)."""
        b, c, length = x.shape
        lo = torch.floor(idx)
        w = (idx - lo).unsqueeze(1)
        lo_i = lo.long()
        hi_i = lo_i + 1
        if self.circular:
            lo_i, hi_i = lo_i % length, hi_i % length
            v_lo = x.gather(2, lo_i.unsqueeze(1).expand(b, c, length))
            v_hi = x.gather(2, hi_i.unsqueeze(1).expand(b, c, length))
        else:
            valid_lo = ((lo_i >= 0) & (lo_i < length)).unsqueeze(1)
            valid_hi = ((hi_i >= 0) & (hi_i < length)).unsqueeze(1)
            v_lo = x.gather(2, lo_i.clamp(0, length - 1).unsqueeze(1).expand(b, c, length))
            v_hi = x.gather(2, hi_i.clamp(0, length - 1).unsqueeze(1).expand(b, c, length))
            v_lo = v_lo * valid_lo
            v_hi = v_hi * valid_hi
        return v_lo * (1.0 - w) + v_hi * w


class ImageAugment:
    """The SimCLR image augmentation recipe, batched with ``kornia.augmentation``.

    Per sample (Chen et al., 2020, Appendix A; the CIFAR variant drops the blur):

    * ``RandomResizedCrop(size, scale=crop_scale)`` (SimCLR: (0.08, 1); the default here,
      (0.2, 1), suits small images);
    * ``RandomHorizontalFlip`` (``hflip``; turn it off for digits if you wish);
    * ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with probability 0.8, ``s = jitter``;
      single-channel images get brightness and contrast jitter only;
    * ``RandomGrayscale(p=0.2)`` for 3-channel images only;
    * ``RandomGaussianBlur`` with a kernel of about 10% of the side (odd, >= 3) and
      sigma in (0.1, 2.0) with probability ``blur_p``; by default 0.5 for images of at
      least 32 pixels and 0 for smaller ones (a 3-pixel blur erases an 8x8 digit).

    Colour operations assume pixel values in [0, 1]; an input outside that range raises
    a ``ValueError`` (scale it first, e.g. ``x / 16`` for scikit-learn digits).

    kornia draws from torch's global RNG; this wrapper forks that RNG and seeds it from
    ``generator``, so the views depend only on the generator and the global RNG is left
    untouched.

    Args:
        size: output side (square images) or (height, width).
        channels: 1 (grayscale) or 3 (RGB).
        crop_scale: area range of the random resized crop.
        hflip: apply random horizontal flips.
        jitter: colour-jitter strength ``s`` (0 turns jitter off).
        jitter_p: probability of the colour jitter.
        gray_p: probability of converting an RGB image to grayscale.
        blur_p: probability of the Gaussian blur; ``None`` picks by image size.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        channels: int = 3,
        *,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        jitter: float = 0.5,
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float | None = None,
    ) -> None:
        import kornia.augmentation as K

        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(hw) < 2:
            raise ValueError(f"size must be at least 2 pixels; got {size!r}.")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels}.")
        _check_range(crop_scale, "crop_scale", 1e-6, 1.0)
        for name, p in (("jitter_p", jitter_p), ("gray_p", gray_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {p}.")
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0; got {jitter}.")
        if blur_p is None:
            blur_p = 0.5 if min(hw) >= 32 else 0.0
        if not 0.0 <= blur_p <= 1.0:
            raise ValueError(f"blur_p must be a probability in [0, 1]; got {blur_p}.")
        self.size = hw
        self.channels = channels
        self.uses_colour = jitter > 0 and jitter_p > 0
        ops: list[nn.Module] = [K.RandomResizedCrop(hw, scale=crop_scale)]
        if hflip:
            ops.append(K.RandomHorizontalFlip())
        if self.uses_colour:
            sat, hue = (0.8 * jitter, 0.2 * jitter) if channels == 3 else (0.0, 0.0)
            ops.append(K.ColorJitter(0.8 * jitter, 0.8 * jitter, sat, hue, p=jitter_p))
        if channels == 3 and gray_p > 0:
            ops.append(K.RandomGrayscale(p=gray_p))
        if blur_p > 0:
            k = max(3, int(0.1 * min(hw)) // 2 * 2 + 1)
            ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=blur_p))
        self.pipeline = nn.Sequential(*ops)

    def __repr__(self) -> str:
        return f"ImageAugment(size={self.size}, channels={self.channels}, ops={self.pipeline})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return one augmented view of the (B, C, H, W) batch ``x``."""
        if x.ndim != 4 or x.shape[1] != self.channels or not x.is_floating_point():
            raise ValueError(
                f"ImageAugment expects a float tensor (B, {self.channels}, H, W); got "
                f"{x.ndim}-D {x.dtype} shape {tuple(x.shape)}."
            )
        if self.uses_colour and (bool((x < 0).any()) or bool((x > 1).any())):
            raise ValueError(
                "ImageAugment's colour jitter needs pixel values in [0, 1]; rescale the "
                "images (e.g. x / 255 or x / 16) or pass jitter=0."
            )
        gen_device = generator.device if generator is not None else torch.device("cpu")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out: torch.Tensor = self.pipeline(x)
        return out


class _Identity:
    """No augmentation: the view is the input (useful for debugging a method)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


AUGMENTATIONS: dict[str, Callable[..., Augmentation]] = {
    "mnist1d": MNIST1DAugment,
    "image": ImageAugment,
    "none": _Identity,
}


def build_augment(name: str, sample_shape: tuple[int, ...], **kwargs: Any) -> Augmentation:
    """Build an augmentation by name for inputs whose per-sample shape is ``sample_shape``.

    ``"auto"`` picks ``"mnist1d"`` for (L,) or (C, L) samples and ``"image"`` for
    (C, H, W) samples; ``"image"`` takes its size and channels from ``sample_shape``
    unless given.

    Raises:
        ValueError: on an unknown name or a shape the augmentation cannot handle.
    """
    key = name.lower()
    if key == "auto":
        if len(sample_shape) in (1, 2):
            key = "mnist1d"
        elif len(sample_shape) == 3:
            key = "image"
        else:
            raise ValueError(
                f"augment='auto' cannot handle samples of shape {sample_shape}; use (L,), "
                "(C, L) or (C, H, W) inputs, or name the augmentation."
            )
    if key not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation {name!r}; choose one of {[*AUGMENTATIONS, 'auto']}."
        )
    if key == "image":
        if len(sample_shape) != 3:
            raise ValueError(f"augment='image' needs (C, H, W) samples; got {sample_shape}.")
        kwargs.setdefault("size", (sample_shape[1], sample_shape[2]))
        kwargs.setdefault("channels", sample_shape[0])
    return AUGMENTATIONS[key](**kwargs)
