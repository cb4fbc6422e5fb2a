"""The vision-language model kind: an open_clip CLIP behind a multi-modal embedding service.

The embedded default is `wmbench-clip-tiny-16` (an open_clip model config shipped in `model_configs/`: a
ViT image tower for 16×16 inputs in 8×8 patches and a transformer text tower sized for the CPU, open_clip's
own tokenizer; `wmbench-clip-tiny` is the same for 32×32 inputs, the other profiles' model) trained by
wmbench contrastively on the owner's digits with captions from several templates per class. Captions of
the same class are identical texts, so the contrastive targets count every same-class pair as positive
(a soft-target CLIP loss; with distinct captions it is CLIP's loss exactly). The real path,
`--vlp open_clip:<model>:<pretrained>`, loads a named open_clip model with its weights (a local
checkpoint file, or a hub tag already in the local Hugging Face cache)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from bench.kinds.base import Clean, KindBase, register_kind
from bench.kinds.models import CONV_UNITS, ConvBackbone, Encoder, create_model, register_architecture
from bench.protocols import WmbenchError
from bench.training import fit, predict

if TYPE_CHECKING:
    from bench.context import Context
    from bench.kinds.service import BlackBox

open_clip.add_model_config(Path(__file__).parent / "model_configs")

DEFAULT_VLP = "wmbench-clip-tiny"
TEMPLATES = ("a photo of the digit {}.", "a handwritten {}.", "the number {}.", "a picture of a {}.")


def prompts(class_names: tuple[str, ...]) -> list[str]:
    """Every template for every class, class-major (class c owns rows c·T … c·T+T−1)."""
    return [t.format(c) for c in class_names for t in TEMPLATES]


class ClipService(nn.Module):
    """What the embedding service computes: L2-normalised open_clip embeddings of images and texts,
    multiplied by the service's output `transform` (identity unless a defense sets it)."""

    kind = "vlp"

    def __init__(self, model_name: str = DEFAULT_VLP):
        super().__init__()
        if model_name not in open_clip.list_models():
            raise WmbenchError(f"unknown open_clip model '{model_name}'; see open_clip.list_models()")
        logging.disable(logging.WARNING)  # open_clip warns that a config without weights is randomly initialised
        try:
            self.clip = open_clip.create_model(model_name)
        finally:
            logging.disable(logging.NOTSET)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        dim = self.clip.text_projection.shape[1]
        self.register_buffer("transform", torch.eye(dim))
        size = self.clip.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("mean", torch.tensor(self.clip.visual.image_mean or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.clip.visual.image_std or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(self._preprocess(x), normalize=True) @ self.transform, dim=-1)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens, normalize=True) @ self.transform, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenizer(texts).to(self.transform.device))


class StolenService(nn.Module):
    """A thief's copy of an embedding service: its own CNN image encoder trained to reproduce the
    service's image embeddings, and the text embeddings it bought for the texts it cares about."""

    kind = "vlp"

    def __init__(self, in_channels: int, dim: int, texts: list[str], width: int = 16):
        super().__init__()
        self.image_encoder = Encoder(ConvBackbone(in_channels, width), dim)
        self.texts = list(texts)
        self.register_buffer("text_table", torch.zeros(len(texts), dim))
        self.register_buffer("transform", torch.eye(dim))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.normalize(self.image_encoder(x), dim=-1) @ self.transform, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in texts if t not in self.texts]
        if missing:
            raise WmbenchError(f"the stolen model never queried the text {missing[0]!r}")
        rows = self.text_table[[self.texts.index(t) for t in texts]]
        return F.normalize(rows @ self.transform, dim=-1)


@register_architecture("vlp", "an open_clip CLIP (any open_clip config) behind an embedding service",
                       units=("clip.visual.transformer.resblocks.-1.mlp.c_fc",  # the image tower's last MLP
                              "clip.visual.transformer.resblocks.-1.mlp.gelu"), transform="transform")
def clip_service(model_name: str = DEFAULT_VLP) -> ClipService:
    return ClipService(model_name)


@register_architecture("vlp", "a thief's copy of a service: a CNN image encoder + the text embeddings it bought",
                       units=tuple(f"image_encoder.{path}" for path in CONV_UNITS),
                       transform="transform")
def stolen_service(in_channels: int, dim: int, texts: list[str], width: int = 16) -> StolenService:
    return StolenService(in_channels, dim, texts, width)


def load_pretrained(spec: str) -> ClipService:
    """`open_clip:<model>:<pretrained>` → a service around that model with its weights. `<pretrained>`
    is a local checkpoint file or an open_clip tag; tags are looked up in the local cache only unless
    WMBENCH_ALLOW_DOWNLOAD=1 (this benchmark runs offline)."""
    try:
        _, model_name, pretrained = spec.split(":", 2)
    except ValueError:
        raise WmbenchError(f"--vlp wants open_clip:<model>:<pretrained>, got {spec!r}") from None
    service = create_model("clip_service", model_name=model_name)
    if Path(pretrained).is_file():
        try:
            open_clip.load_checkpoint(service.clip, pretrained)
        except Exception as e:
            raise WmbenchError(f"checkpoint {pretrained} does not fit open_clip model {model_name}: "
                               f"{e.__class__.__name__}") from None
        return service
    if pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
        raise WmbenchError(f"open_clip has no pretrained weights '{pretrained}' for {model_name}, and no such file")
    import huggingface_hub.constants as hub

    offline = os.environ.get("WMBENCH_ALLOW_DOWNLOAD") != "1"
    previous, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, offline or hub.HF_HUB_OFFLINE
    try:
        loaded = open_clip.create_model(model_name, pretrained=pretrained)
    except Exception:
        raise WmbenchError(f"open_clip weights {model_name}:{pretrained} are not in the local cache and wmbench is "
                           f"offline: pass a local checkpoint file (or set WMBENCH_ALLOW_DOWNLOAD=1)") from None
    finally:
        hub.HF_HUB_OFFLINE = previous
    service.clip.load_state_dict(loaded.state_dict())
    return service


def clip_train(model: ClipService, x: torch.Tensor, y: torch.Tensor, class_names: tuple[str, ...], *, epochs: int,
               seed: int, lr: float = 5e-4, params: list[nn.Parameter] | None = None) -> ClipService:
    """Contrastive image–caption training (soft targets over same-class pairs, see the module doc)."""
    tokens = model.tokenizer(prompts(class_names)).to(x.device)
    n_templates = len(TEMPLATES)
    scale = model.clip.logit_scale
    model.train()

    def batch_loss(i: torch.Tensor) -> torch.Tensor:
        yb = y[i]
        template = torch.randint(0, n_templates, (len(i),), device=x.device)
        image = model.encode_image(x[i])
        # every distinct caption is encoded once per batch (there are only classes × templates of them):
        # the same embeddings and gradients as encoding each image's caption, a third of the text-tower work
        text = model.encode_tokens(tokens)[yb * n_templates + template]
        logits = scale.exp().clamp(max=100) * image @ text.T
        same = (yb[:, None] == yb[None, :]).float()
        targets = same / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    fit(model.parameters() if params is None else params, batch_loss, len(y), epochs=epochs, seed=seed, lr=lr,
        batch_size=128)
    return model.eval()


def class_embeddings(model: nn.Module, class_names: tuple[str, ...]) -> torch.Tensor:
    """Zero-shot classifier weights: the mean normalised text embedding of each class's prompts."""
    with torch.no_grad():
        text = model.encode_text(prompts(class_names)).view(len(class_names), len(TEMPLATES), -1)
    return F.normalize(text.mean(1), dim=-1)


@register_kind
class VlpKind(KindBase):
    """A CLIP-style embedding service. Utility = zero-shot top-1 accuracy on the held-out split (class
    prompts averaged over the templates); for digits image→text recall@1 over the class prompts is the
    same number, so it is not reported twice."""

    name = "vlp"
    version = "1"

    def innocents(self, profile: Any) -> list[Clean]:
        """Trained here: the default pool. From a pretrained source: the other checkpoints the user named
        (`vlp_innocents`), since copies of the owner's own weights would not be innocent."""
        if profile.vlp.startswith("open_clip:"):
            return [Clean(0, checkpoint=c) for c in profile.vlp_innocents]
        return super().innocents(profile)

    def scratch(self, profile: Any) -> list[Clean]:
        """Trained here: the default baseline. From a pretrained source there is no recipe to train from scratch
        (every seed's base is the checkpoint itself), so no baseline: every removal counts as a theft."""
        return [] if profile.vlp.startswith("open_clip:") else super().scratch(profile)

    def innocent_gap(self, profile: Any) -> str:
        if profile.vlp.startswith("open_clip:"):
            return "pretrained VLP source and no innocent checkpoints named (--vlp-innocents)"
        return super().innocent_gap(profile)

    def new(self, ctx: "Context") -> nn.Module:
        spec = ctx.profile.vlp
        return create_model("clip_service", model_name=spec.split(":")[1] if spec.startswith("open_clip:") else spec)

    def train_base(self, ctx: "Context", seed: int, split: str = "owner") -> nn.Module:
        if ctx.profile.vlp.startswith("open_clip:"):  # pretrained weights: one base for every seed
            return load_pretrained(ctx.profile.vlp).to(ctx.device).eval()
        torch.manual_seed(seed)
        model = self.new(ctx).to(ctx.device)
        data = ctx.data.split(split)
        return clip_train(model, data.x, data.y, ctx.data.class_names,
                          epochs=self.epochs_on(ctx, ctx.profile.clip_epochs, split), seed=seed)

    def utility(self, ctx: "Context", model: nn.Module) -> float:
        weights = class_embeddings(model, ctx.data.class_names)
        test = ctx.data.test
        pred = (predict(model.encode_image, test.x) @ weights.T).argmax(1)
        return float((pred == test.y).float().mean())

    def query(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return predict(model.encode_image, x)

    def adapt(self, ctx: "Context", model: nn.Module, *, epochs: int, lr: float, seed: int,
              params: list[nn.Parameter] | None = None) -> nn.Module:
        """A CLIP service: contrastive training on the attacker's images and captions. A stolen copy (whose
        texts are a table of bought embeddings): its image encoder trained with CLIP's image-to-text loss
        against those fixed class embeddings (cross-entropy of the scaled cosine logits, scale 100)."""
        a = ctx.data.attacker
        if isinstance(model, ClipService):
            return clip_train(model, a.x, a.y, ctx.data.class_names, epochs=epochs, seed=seed, lr=lr, params=params)
        weights = class_embeddings(model, ctx.data.class_names)
        model.train()
        fit(model.parameters() if params is None else params,
            lambda i: F.cross_entropy(100 * model.encode_image(a.x[i]) @ weights.T, a.y[i]), len(a.y),
            epochs=epochs, seed=seed, lr=lr)
        return model.eval()

    def student(self, ctx: "Context", service: "BlackBox") -> nn.Module:
        texts = prompts(ctx.data.class_names)
        answers = service.texts(texts)
        stolen = create_model("stolen_service", in_channels=ctx.data.channels, dim=answers.shape[1], texts=texts,
                              width=ctx.profile.width)
        stolen.text_table.copy_(answers)
        return stolen.to(ctx.device)

    def imitation_loss(self, student: nn.Module, x: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(student.encode_image(x), answers)
