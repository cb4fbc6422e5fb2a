"""Run configuration and model/data size profiles, as plain dataclasses (configs are data)."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from bench.protocols import WmbenchError

# The attacker's data shares a profile or `--attacker-share` may name, as fractions of the owner's training-set
# size; 0.50 is the whole independent split (bench/data.py: a quarter of the images against the owner's half).
ATTACKER_SHARES: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25, 0.50)


@dataclass(frozen=True)
class Profile:
    """Model and data sizes and training budgets; `default` runs in CPU minutes."""

    name: str = "default"
    dataset: str = "digits"  # a registered dataset spec (bench.datasets): digits, fashion_mnist, cifar10:<root>, folder:<path>
    image_size: int = 32
    train_limit: int = 0  # datasets with an official test set: a stratified subset of this many training images (0: all)
    width: int = 16  # channels of the first conv stage of the CNNs
    classifier_arch: str = "small_cnn"  # a registered classifier architecture (`wmbench list`)
    encoder_arch: str = "conv_encoder"  # a registered encoder architecture
    vlp: str = "wmbench-clip-tiny"  # an open_clip model config trained here, or open_clip:<model>:<pretrained>
    classifier_epochs: int = 15  # one-cycle schedule (bench/kinds/base.py BASE_LR)
    encoder_epochs: int = 20  # one-cycle
    clip_epochs: int = 40
    embed_epochs: int = 30  # epochs of a watermark fine-tuned into a trained model (AWEncoder), constant rate
    attack_epochs: int = 6  # epochs an attacker spends training (fine-tuning, unlearning)
    cleanse_rounds: int = 20  # Neural Cleanse's trigger search per label: at most this many rounds of 10 steps
    extraction_epochs: int = 10  # epochs an extraction thief trains its student over its queries (more queries = more steps)
    n_innocent: int = 10  # independently trained clean models per kind (bench.context.innocent_pool)
    null_keys: int = 99  # K, the null keys of every key-randomization test (bench/nulls.py): p-values resolve α ≥ 1/(K+1)
    alpha: float = 0.01  # the level verdicts are read at unless the run says otherwise (`--alpha`)
    vlp_innocents: tuple[str, ...] = ()  # with a pretrained VLP source: other checkpoints, the innocent models
    mixed_precision: bool = False  # train in bfloat16 autocast on CUDA (never on CPU; verification stays float32)
    clean_control_seeds: int = 3  # seeds in which each attack also runs on the clean model (an innocent control)
    seeds: int = 10  # owner seeds per cell when the run does not say (`--seeds`): enough for a Wilson interval to decide
    # The attacker's data (`Dataset.attacker`, what every attack that trains or queries uses): this fraction of the
    # owner's training-set size, a stratified subset of the independent split (one of ATTACKER_SHARES). A thief
    # holding half the owner's data trains a model nearly as good as the marked one itself (docs/methods.md).
    attacker_data_share: float = 0.10
    scratch_seeds: int = 3  # the attacker's own models: the owner's recipe from scratch on the attacker's data

    # Fields that only attacks and the runner's bookkeeping read. They are left out of the cache descriptors
    # of clean, keyed and watermarked models (`describe(for_models=True)`), so changing an attack budget
    # retrains none of those; a defense's make_key/watermark must not read them.
    ATTACK_ONLY: ClassVar[tuple[str, ...]] = ("attack_epochs", "extraction_epochs", "cleanse_rounds", "n_innocent",
                                              "null_keys", "vlp_innocents", "clean_control_seeds",
                                              "attacker_data_share", "scratch_seeds")
    # Fields of the run rather than of any model or attack (the run records its seeds in its config).
    RUN_ONLY: ClassVar[tuple[str, ...]] = ("seeds", "alpha")

    def __post_init__(self) -> None:
        check_attacker_share(self.attacker_data_share, f"profile '{self.name}': attacker_data_share")
        if not isinstance(self.scratch_seeds, int) or self.scratch_seeds < 0:
            raise WmbenchError(f"profile '{self.name}': scratch_seeds must be a whole number ≥ 0, "
                               f"got {self.scratch_seeds!r}")

    def describe(self, *, for_models: bool = False) -> dict[str, Any]:
        skip = self.RUN_ONLY + (self.ATTACK_ONLY if for_models else ())
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def check_attacker_share(share: object, what: str = "--attacker-share") -> None:
    """Refuse, in one line, an attacker's data share that is not one of ATTACKER_SHARES."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or share not in ATTACKER_SHARES:
        raise WmbenchError(f"{what} must be one of {', '.join(f'{s:.2f}' for s in ATTACKER_SHARES)} (a fraction of "
                           f"the owner's training-set size), got {share!r}")


PROFILES: dict[str, Profile] = {
    # The embedded default: scikit-learn's digits are 8×8 images, so 16×16 keeps every pixel they have (32×32
    # would quadruple the arithmetic of every convolution and ViT token for no information; docs/performance.md);
    # the CLIP config for 16×16 inputs has a quarter of the image tokens, and 24 epochs reach 40's accuracy.
    "default": Profile(image_size=16, vlp="wmbench-clip-tiny-16", clip_epochs=24),
    # The standard leaderboard: real data (Fashion-MNIST, 28×28, the official test set) at a training subset and
    # budgets chosen so that the whole matrix runs cold in ≤ 90 min on 2 CPU cores (docs/performance.md, "What
    # the budget buys"): 9,000 training images (owner 6,000, independent 3,000), epochs fewer than the default's where
    # a recipe sees 6.7× more images per epoch. The attacker holds 600 images (10 % of the owner's 6,000).
    "standard": Profile(name="standard", dataset="fashion_mnist", image_size=28, train_limit=9000,
                        encoder_epochs=12, clip_epochs=16, embed_epochs=12, attack_epochs=3, seeds=5),
    # Bigger models, where an accelerator matters.
    "gpu": Profile(name="gpu", image_size=64, width=64, classifier_epochs=20, encoder_epochs=60, clip_epochs=60,
                   embed_epochs=60, attack_epochs=10, mixed_precision=True, seeds=5),
    # The whole pipeline in seconds (tests, a first look): budgets too small for any scientific reading.
    "smoke": Profile(name="smoke", image_size=16, vlp="wmbench-clip-tiny-16", classifier_epochs=2, encoder_epochs=2,
                     clip_epochs=2, embed_epochs=2, attack_epochs=1, extraction_epochs=1, cleanse_rounds=2, n_innocent=4,
                     null_keys=19, alpha=0.05, seeds=3),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise WmbenchError(f"unknown profile '{name}'; valid: {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass
class RunConfig:
    """What `wmbench run` evaluates. Empty `defenses`/`attacks` mean every registered one."""

    defenses: list[str] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)
    strengths: list[str] = field(default_factory=list)  # empty: every strength of each attack
    seeds: int | None = None  # None: the profile's `seeds`
    out: Path | None = None  # default runs/<profile>: runs never write into the published results/
    device: str = "auto"
    profile: str = "default"
    vlp: str | None = None  # overrides the profile's VLP: open_clip:<model>:<pretrained>
    data: str | None = None  # overrides the profile's dataset (a spec of bench.datasets)
    vlp_innocents: list[str] = field(default_factory=list)  # innocent checkpoints for a pretrained --vlp
    attacker_share: float | None = None  # overrides the profile's attacker_data_share (one of ATTACKER_SHARES)
    cache: Path | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # local worker processes
    alpha: float | None = None  # the level verdicts are read at (None: the profile's `alpha`)
    max_utility_drop: float = 0.05  # an attack that loses more utility than this has not succeeded
    portable: bool = False  # pin CPU kernels in every worker: the same bits on every machine of one CPU family

    def __post_init__(self) -> None:
        self.out = Path("runs") / self.profile if self.out is None else Path(self.out)
        self.cache = Path(self.cache) if self.cache is not None else None
        if self.seeds is not None and (not isinstance(self.seeds, int) or self.seeds <= 0):
            raise WmbenchError(f"--seeds must be a positive integer, got {self.seeds!r}")
        if not isinstance(self.workers, int) or self.workers <= 0:
            raise WmbenchError(f"--workers must be a positive integer, got {self.workers!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise WmbenchError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise WmbenchError(f"--alpha must lie in (0, 1), got {self.alpha!r}")
        if not 0 <= self.max_utility_drop <= 1:
            raise WmbenchError(f"max_utility_drop must lie in [0, 1], got {self.max_utility_drop!r}")
        bad = [c for c in self.vlp_innocents if not c.startswith("open_clip:")]
        if bad:
            raise WmbenchError(f"--vlp-innocents wants open_clip:<model>:<pretrained> entries, got {bad[0]!r}")
        if self.out.exists() and not self.out.is_dir():
            raise WmbenchError(f"output path is a file, not a folder: {self.out}")
        get_profile(self.profile)
        if self.attacker_share is not None:
            check_attacker_share(self.attacker_share)
        if self.vlp is not None and not self.vlp.startswith("open_clip:"):
            raise WmbenchError(f"--vlp wants open_clip:<model>:<pretrained>, got {self.vlp!r}")

    @property
    def n_seeds(self) -> int:
        """The seeds this run evaluates: `--seeds`, else the profile's."""
        return self.seeds if self.seeds is not None else get_profile(self.profile).seeds

    @property
    def level(self) -> float:
        """The level α verdicts are read at: `--alpha`, else the profile's."""
        return float(self.alpha) if self.alpha is not None else get_profile(self.profile).alpha

    @property
    def label(self) -> str:
        """The profile name plus any overrides: results of different set-ups never mix in one database."""
        overrides = (("vlp", self.vlp), ("data", self.data),
                     ("attacker_share", None if self.attacker_share is None else f"{self.attacker_share:g}"))
        return "".join([self.profile] + [f"+{k}={v}" for k, v in overrides if v])

    def resolved_profile(self) -> Profile:
        """The named profile with this run's --vlp / --data / --attacker-share overrides applied."""
        overrides = {k: v for k, v in {"vlp": self.vlp, "dataset": self.data,
                                       "attacker_data_share": self.attacker_share}.items() if v is not None}
        if self.vlp_innocents:
            overrides["vlp_innocents"] = tuple(self.vlp_innocents)
        return replace(get_profile(self.profile), **overrides)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """Read a TOML config (keys = the field names); command-line values in `overrides` win."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise WmbenchError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise WmbenchError(f"malformed config file {path}: {e}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise WmbenchError(f"malformed config file {path}: unknown keys {', '.join(unknown)}")
        try:
            return replace(cls(**raw), **overrides)
        except TypeError as e:
            raise WmbenchError(f"malformed config file {path}: {e}") from None
