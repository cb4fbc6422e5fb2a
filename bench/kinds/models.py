"""Architectures, the timm / open_clip way: each registered by name with `@register_architecture`, its
metadata as data (`Architecture`: the model kind it builds, its last layer, its prunable units, its output
transform), built by one `create_model(name, **kw)`; outside packages register theirs as entry points (group
`wmbench.architectures`, pointing at an `Architecture`). Profiles name the architecture of each kind.

Every model built here remembers its recipe in `model.spec` (name + JSON keyword arguments), which the
artifact cache stores beside the weights, so that a cached model is rebuilt without pickle. Attacks and
defenses reach a model's parts only through this module's accessors (`last_layer`, `output_dim`,
`prunable_units`, `output_transform`), which read the architecture's metadata.

Signatures by kind: a classifier architecture takes (in_channels, num_classes, width), an encoder
architecture (in_channels, dim, width); both keep activations channels-last on the CPU (oneDNN's
convolutions and pooling are about 1.8× faster in that layout, the arithmetic unchanged)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from bench.cache import set_model_factory
from bench.plugins import Catalog, instance_of
from bench.protocols import WmbenchError
from bench.training import clone  # noqa: F401  (where the methods import it from)

ARCHITECTURE_GROUP = "wmbench.architectures"


@dataclass(frozen=True)
class Architecture:
    name: str
    kind: str  # the model kind it builds (classifier, encoder, vlp)
    description: str
    build: Callable[..., nn.Module]
    head: str = ""  # submodule path of its last layer, an nn.Linear ("" if none): what `last_layer` training trains
    units: tuple[str, str] = ("", "")  # (layer whose output channels are its prunable units, the activation after it)
    transform: str = ""  # buffer path of a fixed output transform (a service's, a disguise's); "" if none


_CATALOG: Catalog[Architecture] = Catalog("architecture", ARCHITECTURE_GROUP, ("bench.kinds.models", "bench.kinds.vlp",
                                                                              "bench.served"),
                                          instance_of(Architecture))
architecture_names = _CATALOG.names
get_architecture = _CATALOG.get
reload = _CATALOG.reload


def register_architecture(kind: str, description: str, *, head: str = "", units: tuple[str, str] = ("", ""),
                          transform: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated factory function under its own name, with the given metadata."""

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _CATALOG.register(Architecture(build.__name__, kind, description, build, head, units, transform))
        return build

    return decorator


def architecture_for(kind: str, name: str) -> str:
    """`name`, checked to be a registered architecture of model kind `kind` (one-line error otherwise)."""
    arch = get_architecture(name)
    if arch.kind != kind:
        raise WmbenchError(f"architecture '{name}' builds {arch.kind} models, not {kind} models")
    return name


def create_model(name: str, **kwargs: Any) -> nn.Module:
    model = get_architecture(name).build(**kwargs)
    model.spec = {"name": name, "kwargs": kwargs}
    return model


set_model_factory(lambda spec: create_model(spec["name"], **spec["kwargs"]))


def submodule(model: nn.Module, path: str) -> Any:
    """`a.b.-1.c`: attributes and (negative) indices of module lists, from `model`."""
    for part in path.split("."):
        model = model[int(part)] if part.lstrip("-").isdigit() else getattr(model, part)
    return model


def _metadata(model: nn.Module, field: str) -> Any:
    arch = get_architecture(model.spec["name"])
    value = getattr(arch, field)
    if not any(value if isinstance(value, tuple) else (value,)):
        raise WmbenchError(f"architecture '{arch.name}' declares no {field}")
    return value


def last_layer(model: nn.Module) -> nn.Linear:
    """The architecture's last layer (a classifier's head, an encoder's projection)."""
    return submodule(model, _metadata(model, "head"))


def output_dim(model: nn.Module) -> int:
    """The size of what the model outputs (classes, or the embedding's dimension)."""
    return last_layer(model).out_features


def prunable_units(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The layer whose output channels are the units fine-pruning removes, and the activation after it."""
    layer, activation = _metadata(model, "units")
    return submodule(model, layer), submodule(model, activation)


def layer_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight of every convolution and linear layer (what weight-space attacks prune, quantise or perturb)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def output_transform(model: nn.Module) -> torch.Tensor:
    """The model's fixed output transform (a buffer: composing with it, `T.copy_(T @ M)`, changes the model)."""
    return submodule(model, _metadata(model, "transform"))


def _conv_stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class PooledBackbone(nn.Module):
    """A convolutional trunk (`trunk`, set up by the subclass) whose feature map is average-pooled to 2×2 and
    flattened into `out_dim` features; weights and activations channels-last."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.out_dim = out_channels * 4

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(x.contiguous(memory_format=torch.channels_last))).flatten(1)


class ConvBackbone(PooledBackbone):
    """Three conv stages (width, 2·width, 4·width channels), each halving the resolution."""

    def __init__(self, in_channels: int, width: int):
        super().__init__(4 * width)
        self.stages = nn.Sequential(
            _conv_stage(in_channels, width), _conv_stage(width, 2 * width), _conv_stage(2 * width, 4 * width)
        )
        self.to(memory_format=torch.channels_last)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 convolutions with batch norm, and the identity (or a strided 1×1
    projection) added before the last ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))) + self.shortcut(x))


class ResNetBackbone(PooledBackbone):
    """A small ResNet for 28×28 / 32×32 inputs: a 3×3 stem, three stages of one basic block each (width,
    2·width, 4·width channels; the last two stride 2)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__(4 * width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2),
                                    BasicBlock(2 * width, 4 * width, 2))
        self.to(memory_format=torch.channels_last)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class Classifier(nn.Module):
    """A CNN classifier: backbone → hidden layer (the features) → `head`."""

    kind = "classifier"

    def __init__(self, backbone: nn.Module, num_classes: int, hidden: int = 128):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Sequential(nn.Linear(backbone.out_dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Encoder(nn.Module):
    """A CNN image encoder: backbone → linear map to a `dim`-sized representation, times a fixed output
    `transform` (identity unless someone disguises the encoder)."""

    kind = "encoder"

    def __init__(self, backbone: nn.Module, dim: int = 64):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, dim)
        self.register_buffer("transform", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)) @ self.transform


CONV_UNITS = ("backbone.stages.2.0", "backbone.stages.2.1")  # the last conv stage's channels and its ReLU
RESNET_UNITS = ("backbone.stages.2.bn1", "backbone.stages.2.act1")  # the last block's inner channels (after BN:
# a pruned channel outputs exactly 0)


@register_architecture("classifier", "3 conv stages (16/32/64 channels at width 16) + 128-unit hidden layer",
                       head="head", units=CONV_UNITS)
def small_cnn(in_channels: int, num_classes: int, width: int = 16, hidden: int = 128) -> Classifier:
    return Classifier(ConvBackbone(in_channels, width), num_classes, hidden)


@register_architecture("encoder", "3 conv stages + linear projection to `dim`", head="head", units=CONV_UNITS,
                       transform="transform")
def conv_encoder(in_channels: int, dim: int = 64, width: int = 16) -> Encoder:
    return Encoder(ConvBackbone(in_channels, width), dim)


@register_architecture("classifier", "ResNet: stem + 3 basic blocks with batch norm + 128-unit hidden layer",
                       head="head", units=RESNET_UNITS)
def resnet_cnn(in_channels: int, num_classes: int, width: int = 16, hidden: int = 128) -> Classifier:
    return Classifier(ResNetBackbone(in_channels, width), num_classes, hidden)


@register_architecture("encoder", "ResNet: stem + 3 basic blocks with batch norm + linear projection to `dim`",
                       head="head", units=RESNET_UNITS, transform="transform")
def resnet_encoder(in_channels: int, dim: int = 64, width: int = 16) -> Encoder:
    return Encoder(ResNetBackbone(in_channels, width), dim)
