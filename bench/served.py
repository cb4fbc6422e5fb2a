"""Suspects of any shape: a model served behind pre- and post-processing, as a deployed service is.

An attack may return its victim wrapped (`serve(model, pre=..., post=...)`): every query passes the input
transforms `pre` before the model and the outputs pass `post` after it (a VLP service's image and text
embeddings alike). Verification and utility treat the wrapper like any model. Each transform is registered
by name with JSON parameters (`@register_transform`, or the entry-point group `wmbench.transforms` pointing
at a `Transform`), so the wrapper's recipe is data: `{"name": "served", "kwargs": {"inner": <the model's
recipe>, "pre": [...], "post": [...]}}`, which the artifact cache stores and rebuilds like any model's."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bench.kinds.models import create_model, register_architecture
from bench.plugins import Catalog, instance_of

TRANSFORM_GROUP = "wmbench.transforms"


@dataclass(frozen=True)
class Transform:
    name: str
    description: str
    build: Callable[..., nn.Module]  # keyword parameters (JSON values) → the transform as a module


_TRANSFORMS: Catalog[Transform] = Catalog("transform", TRANSFORM_GROUP, ("bench.served",), instance_of(Transform))
transform_names = _TRANSFORMS.names
get_transform = _TRANSFORMS.get


def register_transform(description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated factory (keyword parameters → nn.Module) under its own name."""

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _TRANSFORMS.register(Transform(build.__name__, description, build))
        return build

    return decorator


class Served(nn.Module):
    """`inner` behind input transforms `pre` (applied in order) and output transforms `post`."""

    def __init__(self, inner: nn.Module, pre: list[nn.Module], post: list[nn.Module]):
        super().__init__()
        self.inner, self.pre, self.post = inner, nn.ModuleList(pre), nn.ModuleList(post)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.pre:
            x = t(x)
        return x

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        for t in self.post:
            y = t(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.inner(self._in(x)))

    def __getattr__(self, name: str) -> Any:
        """What the served model offers besides `forward` (a service's `encode_image` and `encode_text`, whose
        answers pass the same steps; its kind, …), where the served model has it."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner":
                raise
        answer = getattr(super().__getattr__("inner"), name)
        if name == "encode_image":
            return lambda x: self._out(answer(self._in(x)))
        if name == "encode_text":
            return lambda texts: self._out(answer(texts))
        return answer


@register_architecture("any", "a model served behind input/output transforms (`bench.served.serve`)")
def served(inner: dict[str, Any], pre: list[dict[str, Any]] = (), post: list[dict[str, Any]] = ()) -> nn.Module:
    def build(steps: list[dict[str, Any]]) -> list[nn.Module]:
        return [get_transform(s["name"]).build(**s.get("params", {})) for s in steps]

    return Served(create_model(inner["name"], **inner["kwargs"]), build(pre), build(post))


def serve(model: nn.Module, pre: list[dict[str, Any]] = (), post: list[dict[str, Any]] = (),
          post_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """`model` behind the transforms `pre` and `post` (each `{"name": <registered transform>, "params": {…}}`);
    a model already served keeps its own transforms inside the new ones. `post_state` gives buffers of the
    new `post` steps by their index in `post` (`{"0.directions": …}`), for transforms fitted to data."""
    inner, old_pre, old_post = model, [], []
    if isinstance(model, Served):
        inner, old_pre, old_post = model.inner, model.spec["kwargs"]["pre"], model.spec["kwargs"]["post"]
    wrapped = create_model("served", inner=inner.spec, pre=[*pre, *old_pre], post=[*old_post, *post])
    wrapped.inner.load_state_dict(inner.state_dict())
    if isinstance(model, Served):  # the old steps keep their fitted buffers
        for i, step in enumerate(model.pre):
            wrapped.pre[len(pre) + i].load_state_dict(step.state_dict())
        for i, step in enumerate(model.post):
            wrapped.post[i].load_state_dict(step.state_dict())
    for name, value in (post_state or {}).items():
        index, _, buffer = name.partition(".")
        getattr(wrapped.post[len(old_post) + int(index)], buffer).copy_(value)
    return wrapped.to(next(inner.parameters()).device).eval()


@register_transform("clamp every input value into [low, high] (an input check that sanitises out-of-range pixels)")
def clamp(low: float = 0.0, high: float = 1.0) -> nn.Module:
    return _Lambda(lambda x: x.clamp(low, high))


@register_transform("quantise inputs in [0, 1] to `levels` grey levels (8-bit: 256)")
def quantize(levels: int = 256) -> nn.Module:
    return _Lambda(lambda x: torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1))


@register_transform("Gaussian blur of the input with standard deviation `sigma` pixels")
def gaussian_blur(sigma: float = 1.0) -> nn.Module:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-t**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = kernel.to(x)
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                     groups=c)
        return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                        groups=c)

    return _Lambda(blur)


@register_transform("JPEG compression of each input at `quality` (1–100; the image clamped into [0, 1] and rounded to "
                    "8 bits first, as an image file is; Pillow's encoder), decoded back before the model")
def jpeg(quality: int = 50) -> nn.Module:
    def compress(x: torch.Tensor) -> torch.Tensor:
        images = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = []
        for image in images:
            channels = image.shape[-1]
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if channels == 1 else image).save(buffer, format="JPEG", quality=int(quality))
            decoded.append(np.asarray(Image.open(buffer).convert("L" if channels == 1 else "RGB")).reshape(image.shape))
        return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(x) / 255

    return _Lambda(compress)


@register_transform("additive Gaussian noise of standard deviation `std` on every input value, not clamped (the noise "
                    "of each query drawn from `seed` and the query itself, so an answer is reproducible)")
def gaussian_noise(std: float = 0.1, seed: int = 0) -> nn.Module:
    def noisy(x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1).float().cpu()
        out = torch.empty_like(flat)
        for i, row in enumerate(flat):  # a query's noise depends on the query, not on the batch it came in
            gen = torch.Generator().manual_seed(seed ^ int.from_bytes(hashlib.blake2b(row.numpy().tobytes(),
                                                                                      digest_size=7).digest(), "big"))
            out[i] = torch.randn(row.shape, generator=gen)
        return x + std * out.reshape(x.shape).to(x)

    return _Lambda(noisy)


class OODFilter(nn.Module):
    """An input check in front of a model: a query is rejected when any of its values lies outside [0, 1] (no
    image a normal user sends does) or when its score — the mean squared z-score of its pixels under the
    per-pixel `mean` and `std` of the images it was fitted on — exceeds `threshold`; a rejected query reaches
    the model as the `mean` image, so every rejected query gets the one uninformative answer. Accepted queries
    pass unchanged. `mean` and `std` are flat (C·H·W values, channel-major); the statistics are rebuilt from
    them at build time and kept out of the state dict, so the recipe alone defines the filter."""

    def __init__(self, mean: list[float], std: list[float], threshold: float):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"ood_filter: {len(mean)} means but {len(std)} standard deviations")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.threshold = float(threshold)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Per input, the mean over its values of ((x − mean) / std)²."""
        z = (x.flatten(1) - self.mean.to(x)) / self.std.to(x)
        return z.pow(2).mean(1)

    def rejects(self, x: torch.Tensor) -> torch.Tensor:
        """Per input, whether the filter answers it with the mean image (out of range, or scored above the
        threshold)."""
        out_of_range = ((x < 0) | (x > 1)).flatten(1).any(1)
        return out_of_range | (self.score(x) > self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rejected = self.rejects(x).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(rejected, self.mean.to(x).view(x.shape[1:]), x)


@register_transform("reject inputs with values outside [0, 1] or a mean squared per-pixel z-score (per-pixel `mean`, "
                    "`std`) above `threshold`, and answer them as the `mean` image (an out-of-distribution filter)")
def ood_filter(mean: list[float], std: list[float], threshold: float) -> nn.Module:
    return OODFilter(mean, std, threshold)


class _Lambda(nn.Module):
    """A parameter-free transform given as a function."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@register_transform("Gaussian noise of standard deviation `std` per dimension on each returned embedding, then "
                    "L2-normalised (the noise drawn from `seed` afresh for every call)")
def embedding_noise(std: float = 0.05, seed: int = 0) -> nn.Module:
    def noisy(y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return F.normalize(y + std * torch.randn(y.shape, generator=gen).to(y), dim=-1)

    return _Lambda(noisy)


@register_transform("each embedding dimension quantised to `levels` values in [-1, 1], then L2-normalised")
def embedding_quantize(levels: int = 256) -> nn.Module:
    return _Lambda(lambda y: F.normalize(torch.round((y.clamp(-1, 1) + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1,
                                         dim=-1))


class ProjectOut(nn.Module):
    """Removes the span of the rows of `directions` (k × dim, orthonormal) from every output, then
    L2-normalises: WARDEN's CSE attack on an embedding watermark drops the top principal directions."""

    def __init__(self, k: int, dim: int):
        super().__init__()
        self.register_buffer("directions", torch.zeros(k, dim))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        u = self.directions.to(y)
        return F.normalize(y - (y @ u.T) @ u, dim=-1)


class Permute(nn.Module):
    """Reorders the dimensions of every output by the permutation `order`."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("order", torch.arange(dim))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y[..., self.order]


@register_transform("the span of k directions (a buffer, e.g. the top principal directions) removed from every "
                    "output, then L2-normalised")
def project_out(k: int, dim: int) -> nn.Module:
    return ProjectOut(k, dim)


@register_transform("the output's dimensions reordered by a fixed permutation (a buffer)")
def permute(dim: int) -> nn.Module:
    return Permute(dim)
