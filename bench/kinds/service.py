"""Black-box access to a deployed model, counting queries: all that an extraction thief sees."""
from __future__ import annotations

import torch
from torch import nn

from bench.kinds.base import ModelKindSpec


class BlackBox:
    def __init__(self, model: nn.Module, kind: ModelKindSpec):
        self._model = model
        self._kind = kind
        self.queries = 0

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """The service's answers for images `x` (probabilities, features or embeddings, by kind)."""
        self.queries += len(x)
        return self._kind.query(self._model, x)

    def texts(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings (embedding services of the vision-language kind only)."""
        self.queries += len(texts)
        with torch.no_grad():
            return self._model.encode_text(texts)
