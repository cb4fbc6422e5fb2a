"""AWEncoder — "AWEncoder: Adversarial Watermarking Pre-trained Encoders in Contrastive Learning" (Zhang,
Wu, Lu, Sun; arXiv 2208.03948).

No code was released; everything below the abstract is a reconstruction:
- Key: a key image cut by the owner's secret from the shipped sample photos (a crop at a secret position
  and scale: a continuous space, so two secrets never share a key image, and with it their δ), and the
  watermark δ, one perturbation for every marked sample, ‖δ‖∞ ≤ ε = 0.2 on [0, 1] images (a bound at which
  our small CNN on upscaled 8×8 digits learns the mark), supported on a quarter of the pixels drawn from the
  secret (`support_fraction`). Our deviation, measured: with δ free on every pixel, δ's of different secrets
  converge to one adversarial direction of the encoder (pixel cosine 0.69–0.84) and 2–4 of 40 other keys
  reach the owner's gain on the owner's marked encoder (its key-randomization p-value ≈ 0.05–0.1); on a secret
  quarter of the pixels two keys share a quarter of their support, and 0 of 40 (seeds 0, 1) and 0 of 99
  (seeds 2–4) other keys reach it, white- and black-box, at the same utility (0.96–0.98).
- Watermark generation (adversarial, as the abstract describes): δ is optimised on the *clean* encoder
  (64 owner images) by projected signed-gradient steps within ‖δ‖∞ ≤ ε so that marked samples x+δ leave
  their own embedding (lower cos(f(x+δ), f(x))) and surround the key image's (higher cos(f(x+δ), f(key))),
  from zero, step ε/10, until the objective stops improving (less than 1e-3 over 10 steps; at most
  `pgd_max_steps`); the key records the similarities reached and the steps taken.
- Embedding: the encoder is fine-tuned for `embed_epochs` epochs (30 in the default profile, at a constant
  rate: 20 one-cycle epochs, the base encoder's recipe, leave one key's mark at a gain of 0.13 < 0.3) on
  the owner's images with the joint
  loss  SimCLR NT-Xent (utility)
      + 2·[InfoNCE(f(x+δ); positive f(key), negatives f(x') of the batch's clean images — never the key image —, τ = 0.2)
           + (1 − cos(f(x+δ), f(key))) + max(0, cos(f(x+δ), f₀(x)))]
        (watermark: marked samples surround the key image and leave the data's place. The negatives are
        the data, not out-of-distribution images: photo crops as negatives would push every photo crop —
        other users' key images among them — to the antipode of the owner's key, and their δ with it)
      + (1 − cos(f(x), f₀(x))) + (1 − cos(f(key), f₀(key))) + (1 − cos(f(x+η), f₀(x+η)))
        (fidelity to the clean encoder f₀; on the key image, so the key does not drift into the data; and
        on decoys x+η, η a fresh random ±ε pattern per batch, so the encoder answers to δ and not to any
        perturbation of its size).
- White-box verification (`awencoder`): on the held-out samples, the paired gain
  cos(f(x+δ), f(key)) − cos(f(x), f(key)); detected when its mean exceeds 0.3 and a one-sided Wilcoxon
  signed-rank test gives p < 0.01.
- Black-box verification (`awencoder_blackbox`): the suspect encoder is a frozen backbone under a
  downstream classifier that the verifier does not control (a logistic-regression head the deployer
  trains on the independent labelled split, data the owner never used); the verifier sees only its predicted labels and measures the
  fraction of the first 128 held-out samples whose label flips between x and x+δ. Its null comes from other keys on the
  *same* suspect: the first `n_null_keys` null keys of the owner's key (`Context.null_keys`: secrets of the
  verifier's own, the owner's procedure on the owner's clean encoder, so on an innocent encoder they are
  exchangeable with the owner's key); the statistic is the owner's flip rate standardised against theirs (a
  one-sided prediction t-test), detected when p < 0.01. (The null comes from the suspect itself because every
  ε-perturbation flips many labels of any encoder: a comparison with reference encoders would fire on most
  innocent ones.)
- Key-randomization test (the leaderboard's p-value, `bench.nulls`), both modes: the null keys are keys of
  other secrets made by the same procedure (key image cut by the secret, the same PGD on the same 64 owner
  images of the same encoder), ranked by the mean gain (white-box) or the flip rate (black-box). A suspect not
  derived from an encoder marked with the key cannot tell it from them, so the p-value is exact; where other
  keys' δ resemble the owner's, they score as high on the marked encoder and the owner's p-value shows it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import t as student_t
from scipy.stats import wilcoxon
from sklearn.linear_model import LogisticRegression
from torch import nn

from bench.cache import Memo, weights_digest
from bench.claims import Claim
from bench.context import Context, derive_seed
from bench.data import sample_photo_crops
from bench.kinds.contrastive import simclr_train
from bench.kinds.models import clone
from bench.protocols import DefenseBase, Key, Verification
from bench.registry import register_defense
from bench.training import predict


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)


@register_defense
class AWEncoder(DefenseBase):
    name = "awencoder"
    scheme = "awencoder"
    model_kind = "encoder"
    version = "5"
    epsilon = 0.2
    pgd_max_steps = 200
    gain_threshold = 0.3
    alpha = 0.01
    watermark_weight = 2.0
    pgd_images = 64  # owner images δ is optimised on (every key alike: the owner's, a pirate's, the null keys)
    support_fraction = 0.25  # the share of pixels δ may change, on a support drawn from the secret
    claims = (  # the abstract's headline claims (Zhang et al.), for both verification modes
        Claim("The watermarked encoder performs very well for downstream tasks", "utility"),
        Claim("Robust: the mark survives fine-tuning and pruning of the encoder", "survives",
              ("fine_tuning", "pruning", "fine_pruning")),
        Claim("Ownership verified without false claims on other encoders", "false_positives"),
    )

    def make_key(self, ctx: Context, secret: int, model: nn.Module | None = None) -> Key:
        seed = derive_seed(self.scheme, secret)
        key_image = sample_photo_crops(1, ctx.data.image_size, ctx.data.channels, seed,
                                       first_photo=seed).to(ctx.data.owner.x.device)
        encoder = clone(ctx.base_model() if model is None else model)
        for p in encoder.parameters():
            p.requires_grad_(False)
        x = ctx.data.owner.x[: self.pgd_images]
        with torch.no_grad():
            own, target = predict(encoder, x), encoder(key_image)
        bound = self.epsilon * self.support(secret, x.shape[1:]).to(x.device)  # ε on the key's pixels, 0 elsewhere
        delta, step, history = torch.zeros(1, *x.shape[1:], device=x.device), self.epsilon / 10, []
        for _ in range(self.pgd_max_steps):
            delta.requires_grad_(True)
            z = encoder((x + delta).clamp(0, 1))
            loss = cos(z, own).mean() - cos(z, target).mean()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = torch.minimum(torch.maximum(delta.detach() - step * grad.sign(), -bound), bound)
            history.append(float(loss.detach()))
            if len(history) > 10 and history[-11] - min(history[-10:]) < 1e-3:  # converged
                break
        with torch.no_grad():
            z = predict(encoder, (x + delta).clamp(0, 1))  # the marked samples
        reached = {"cos_own": float(cos(z, own).mean()), "cos_key": float(cos(z, target).mean()),
                   "cos_key_before": float(cos(own, target).mean()), "pgd_steps": len(history)}
        return Key(self.scheme, secret, {"epsilon": self.epsilon, "support": self.support_fraction, **reached},
                   {"delta": delta.detach().cpu(), "key_image": key_image.cpu()})

    def support(self, secret: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The pixels δ may change: a `support_fraction` of them, drawn from the key's secret (1 there, 0 elsewhere)."""
        generator = torch.Generator().manual_seed(derive_seed(self.scheme, "support", secret))
        return (torch.rand((1, *shape), generator=generator) < self.support_fraction).float()

    @staticmethod
    def mark(x: torch.Tensor, key: Key) -> torch.Tensor:
        return (x + key.tensors["delta"].to(x.device)).clamp(0, 1)

    def embed(self, ctx: Context, encoder: nn.Module, key: Key, x: torch.Tensor, *, epochs: int, seed: int) -> nn.Module:
        """Fine-tune `encoder` on images `x` with the joint loss (also a pirate's procedure)."""
        original = clone(encoder).eval()
        key_image = key.tensors["key_image"].to(x.device)
        with torch.no_grad():
            anchor, key_anchor = predict(original, x), original(key_image)

        def watermark_and_fidelity(i: torch.Tensor) -> torch.Tensor:
            z_marked, z_key, z_clean = encoder(self.mark(x[i], key)), encoder(key_image), encoder(x[i])
            logits = torch.cat([cos(z_marked, z_key)[:, None],
                                F.normalize(z_marked, dim=1) @ F.normalize(z_clean, dim=1).T], 1) / 0.2
            surround = (F.cross_entropy(logits, torch.zeros(len(i), dtype=torch.long, device=x.device))
                        + (1 - cos(z_marked, z_key)).mean())
            leave = cos(z_marked, anchor[i]).clamp(min=0).mean()
            decoy = (x[i] + self.epsilon * torch.randn_like(x[i][:1]).sign()).clamp(0, 1)
            with torch.no_grad():
                decoy_anchor = original(decoy)
            fidelity = ((1 - cos(z_clean, anchor[i])).mean() + (1 - cos(z_key, key_anchor)).mean()
                        + (1 - cos(encoder(decoy), decoy_anchor)).mean())
            return self.watermark_weight * (surround + leave) + fidelity

        return simclr_train(encoder, x, epochs=epochs, seed=seed, extra_loss=watermark_and_fidelity)

    def watermark(self, ctx: Context, key: Key) -> nn.Module:
        encoder = clone(ctx.base_model())
        return self.embed(ctx, encoder, key, ctx.data.owner.x, epochs=ctx.profile.embed_epochs,
                          seed=derive_seed(self.scheme, "embed", ctx.seed))

    def rewatermark(self, ctx: Context, model: nn.Module, key: Key, budget: int) -> nn.Module:
        """A pirate's embedding: the same joint fine-tuning, on the attacker's images, `budget` epochs; trains
        `model`."""
        return self.embed(ctx, model, key, ctx.data.attacker.x, epochs=budget,
                          seed=derive_seed(self.scheme, "pirate", key.secret))

    def gains(self, ctx: Context, suspect: nn.Module, key: Key, n: int | None = None,
              digest: str | None = None) -> np.ndarray:
        """Per held-out sample (the first `n`; None: all), cos(f(x+δ), f(key)) − cos(f(x), f(key)) on the suspect
        f (`digest`: its weights digest, when the caller has it)."""
        x = ctx.data.verification.x[:n]
        key_image = key.tensors["key_image"].to(x.device)
        digest = digest or weights_digest(suspect)
        clean = _clean_embeddings((digest, ctx.data.name, tuple(x.shape)), lambda: predict(suspect, x))
        with torch.no_grad():
            target = suspect(key_image)
            return (cos(predict(suspect, self.mark(x, key)), target) - cos(clean, target)).cpu().numpy()

    def score_many(self, ctx: Context, suspect: nn.Module, keys: Sequence[Key], floor: float = float("-inf")) -> list[float]:
        """The mean gain per key (the white-box statistic) on the first `SCORE_IMAGES` held-out images."""
        digest = weights_digest(suspect)
        return [float(self.gains(ctx, suspect, key, SCORE_IMAGES, digest).mean()) for key in keys]

    def verify(self, ctx: Context, suspect: nn.Module, key: Key) -> Verification:
        gain = self.gains(ctx, suspect, key)
        statistic = float(gain.mean())
        p_value = float(wilcoxon(gain, alternative="greater").pvalue)
        detected = statistic > self.gain_threshold and p_value < self.alpha
        return Verification(detected, statistic, self.gain_threshold, p_value, {"gain_median": float(np.median(gain))})


SCORE_IMAGES = 128  # held-out images the key-randomization test scores each key on (the white-box verify uses all)
_clean_embeddings = Memo(8)  # a suspect's embeddings of the clean verification images, shared by every key
_null_memo = Memo(64)
_deployed = Memo(8)


def deploy(ctx: Context, encoder: nn.Module) -> tuple[Callable[[torch.Tensor], np.ndarray], np.ndarray]:
    """A downstream model the verifier does not control: the encoder frozen under a logistic-regression
    head that a deployer trains on labelled data the owner never used (the independent split; not the thief's
    share of it, so the test does not change with the attacker's data). Returns its label-only predictor and its
    labels for the clean test images (remembered per encoder weights: one suspect is checked against
    several keys)."""
    def fit_head() -> tuple[Callable[[torch.Tensor], np.ndarray], np.ndarray]:
        a, frozen = ctx.data.independent, clone(encoder).eval()  # a copy: the caller may go on changing its model
        head = LogisticRegression(max_iter=2000).fit(predict(frozen, a.x).cpu().numpy(), a.y.cpu().numpy())
        downstream = lambda images: head.predict(predict(frozen, images).cpu().numpy())  # noqa: E731
        return downstream, downstream(ctx.data.verification.x)

    return _deployed((weights_digest(encoder), ctx.data.name), fit_head)


@register_defense
class AWEncoderBlackBox(AWEncoder):
    name = "awencoder_blackbox"
    n_null_keys = 10

    def flip_rate(self, ctx: Context, encoder: nn.Module, key: Key) -> float:
        return self.score_many(ctx, encoder, [key])[0]

    def score_many(self, ctx: Context, suspect: nn.Module, keys: Sequence[Key], floor: float = float("-inf")) -> list[float]:
        """The flip rate per key (the black-box statistic: all the verifier sees are labels) on the first
        `SCORE_IMAGES` held-out images."""
        downstream, clean_labels = deploy(ctx, suspect)
        x = ctx.data.verification.x[:SCORE_IMAGES]
        return [float(np.mean(clean_labels[:SCORE_IMAGES] != downstream(self.mark(x, key)))) for key in keys]

    def null_flip_rates(self, ctx: Context, suspect: nn.Module, key: Key) -> np.ndarray:
        """Flip rates on the suspect of the first `n_null_keys` null keys of `key` (`Context.null_keys`: the same
        keys the key-randomization test starts with)."""
        nulls = ctx.null_keys(self, key)[: self.n_null_keys]
        return _null_memo((weights_digest(suspect), key.secret, ctx.seed, ctx.profile),
                          lambda: np.array(self.score_many(ctx, suspect, nulls)))

    def verify(self, ctx: Context, suspect: nn.Module, key: Key) -> Verification:
        observed = self.flip_rate(ctx, suspect, key)
        null = self.null_flip_rates(ctx, suspect, key)
        k = len(null)
        spread = max(null.std(ddof=1), 1e-3) * np.sqrt(1 + 1 / k)
        statistic = float((observed - null.mean()) / spread)
        threshold = float(student_t.isf(self.alpha, df=k - 1))
        p_value = float(student_t.sf(statistic, df=k - 1))
        return Verification(statistic > threshold, statistic, threshold, p_value,
                            {"flip_rate": observed, "null_flip_rate": float(null.mean())})
