"""Minimax diffusion (Gu, Vahidian, Kungurtsev, Wang, Jiang, You, Chen. Efficient Dataset Distillation via Minimax
Diffusion. CVPR 2024), with the paper's baselines ``dit`` and ``minimax-finetune`` as method variants.

Implements spec ``minimax.md`` §2–§4 and §9 on the building blocks of :mod:`ddbench.ops.diffusion`:

* **Generator** (§1, §9): a class-conditional diffusers DiT with one shared label embedder and one label drop per
  sample (§8.2.14). ``space = "latent"`` is the faithful path: DiT-XL/2 and the Stable Diffusion VAEs read from
  ``base_checkpoint`` / ``vae_encoder`` / ``vae_decoder`` (diffusers folders or the local Hugging Face cache; nothing
  is downloaded), conditioned on ImageNet-1K indices. ``space = "pixel"`` (the default, spec §9) pretrains its own
  small DiT on all classes of the dataset (or of a superset named by ``base_dataset``, §9.2), in [−1, 1] pixels,
  so it runs offline on a CPU. Both generators, the fine-tuned model and the generation are cached artifacts
  (:mod:`ddbench.ops.diffusion.generators`).
* **Minimax fine-tuning** (§3): L_diff (MSE + VB) + λ_r·L_r + λ_d·L_d with per-class FIFO memories of real z₀ and
  predicted ẑ₀ (capacity 64, detached), cosine on flattened vectors, the hard min / max, K counting classes with
  empty memories; DiffFit parameters (biases, class table, γ on the first half of the blocks) or full fine-tuning;
  AdamW lr 1e-3, constant, batch 8; EMA with decay 1 − 1.2/steps (0.9999 at the paper's 12k steps).
* **Sampling** (§4): EMA weights, CFG scale 4.0 against the null class (id = size of the label space), DiT's
  3-of-4-channel guidance (``cfg_all_channels`` to guide all), the 50-step respaced ancestral DDPM sampler
  (``sampler = "ddim"``: DDIM over 'trailing' steps, flagged deviation). One generation of ``max_ipc`` images per
  class serves every IPC: IPC k is the first k entries of one seeded permutation per class (§4 [ddbench]), recorded
  in ``meta["ipc_indices"]``.
* **Labels** (§2, §8.2.1): the condition of local class k comes from the dataset spec's class list
  (``label_space = "imagenet-1k"``: the wnid's ImageNet-1K index, the §2 table), never from directory order;
  ``"own"`` (pixel path) is the dataset's own class index.
* **Variants** (§9.2 baselines): ``dit`` samples the base model without fine-tuning (same sampler, CFG, IPC and
  evaluation; issue #20); ``minimax-finetune`` is the fine-tune-only ablation (λ_r = λ_d = 0, the first row of
  the ablation).
  ``ddbench run --method minimax`` evaluates both beside Minimax and the random baseline (:attr:`baselines`).
* **Evaluation**: hard labels under ``idc`` (ImageNet subsets, 224 px) or ``idc-32`` (32-px data) as the paper
  protocol, with ResNetAP-10, ConvNet-6 and ResNet-18 (instance norm) as the paper students (§5).

Deviations (all recorded here): the pixel path replaces the latent space and the ImageNet-pretrained DiT by a DiT
pretrained on the dataset itself (§9); images are sampled in batches from one stream (the original: batch 1); a
generation is stored as uint8 at the dataset's resolution (the original saves 256-px PNGs and the evaluator resizes
to 224); on the latent path the fine-tuning images are the dataset's (ADM centre crop replaced by ddbench's
short-side resize + centre crop) resized to the VAE resolution; the decoder NLL uses the exact Gaussian CDF
(:mod:`ddbench.ops.diffusion.schedule`).

**Phases** (§7.2, the author's answer for many classes): ``phase_classes = P`` fine-tunes and samples the classes
in consecutive phases ``[0, P), [P, 2P), …`` as the official ``--nclass P --phase k`` runs do, each phase from the
base model with the whole fine-tuning recipe (its own steps, memories and EMA) and its own artifact; phases are
cached one by one, so a killed ImageNet-1K run resumes at the next phase. That each phase starts from the base
rather than from the previous phase is the spec's [inferred] reading (the script always loads ``--ckpt``). A phase
draws its fine-tuning and sampling randomness from ``(seed, first class)``, where the official phases rerun one
seed; a single phase (``P = 0`` or ``P ≥`` the class count) is the unphased run, bit for bit. The ``dit`` baseline
has nothing to fine-tune and samples all classes at once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch

from ddbench.config import derive_seed
from ddbench.data import Dataset, load_dataset
from ddbench.errors import UserError
from ddbench.method import DistillContext, DistilledSet, Method
from ddbench.ops.diffusion import generators as G
from ddbench.ops.diffusion import require_diffusers
from ddbench.ops.diffusion.labels import LABEL_DROP, base_label_ids
from ddbench.ops.diffusion.minimax import LAMBDA_D, LAMBDA_R, MEMORY_SIZE
from ddbench.ops.diffusion.models import DIT_XL_2_REPO, VAE_REPOS
from ddbench.ops.diffusion.sampling import CFG_SCALE, ipc_permutations, ipc_subset
from ddbench.ops.diffusion.schedule import SAMPLING_STEPS

logger = logging.getLogger(__name__)

#: ImageNet subsets (224 px, the §2 table) and the 32-px datasets with their IDC protocol (§5).
IDC_DATASETS = ("imagewoof", "imagenette", "imageidc")
IDC32_DATASETS = ("cifar10", "cifar100")
#: The paper's students (§5): instance norm everywhere; ResNet-18's norm is not confirmed by the paper (§11).
PAPER_STUDENTS = ("resnet_ap10", "convnet_d6", "resnet18_in")
IDC32_STUDENTS = ("convnet", "resnet_ap10")


@dataclass(frozen=True)
class MinimaxConfig:
    """Minimax settings; defaults are the paper's fine-tuning and sampling values on the pixel path (spec §3, §4, §9).

    Attributes:
        space: ``pixel`` (own DiT in [−1, 1] pixels, §9) or ``latent`` (DiT-XL/2 + SD VAE, §1).
        label_space: conditions of the base model: ``own`` class indices or ``imagenet-1k`` indices of the wnids.
        base_dataset: pixel path: pretrain the base on all classes of this registered dataset, a superset of the
            target's classes (spec §9.2 bench column), instead of the target itself; each target class is
            conditioned on the base dataset's index of the same class name. ``""`` = the target dataset.
        base_data_root: where ``base_dataset`` lives (``""``: the target's own root when it is the same dataset,
            else the usual search: ``$DDBENCH_DATA`` and the home data folder).
        image_size: pixel path: side the DiT runs at (0: the dataset's).
        dit_size, patch: pixel-path DiT (:data:`ddbench.ops.diffusion.models.DIT_SIZES`; patch 0: the size's).
        pretrain_steps, pretrain_batch, pretrain_lr, pretrain_ema, base_seed: pixel-path base pretraining
            (AdamW, weight decay 0, EMA decay; 0 stores the live weights).
        base_checkpoint: latent path: diffusers DiT folder (``PATH`` or ``PATH/transformer``) or cached repo id.
        vae_encoder, vae_decoder: latent path: the VAEs used to encode the fine-tuning data and to decode samples.
        finetune_steps, finetune_batch, finetune_lr, finetune_mode: fine-tuning (§3.2, §3.3).
        lambda_r, lambda_d: weights of the representativeness and diversity terms; memory_size: FIFO capacity.
        ema_decay: EMA decay for sampling (0: 1 − 1.2/finetune_steps).
        flip: random horizontal flip of the training images (pretraining and fine-tuning).
        label_drop: probability of the null condition in training.
        sampler, sampling_steps, cfg_scale, cfg_all_channels: sampling (§4).
        max_ipc: images generated per class, once for every IPC up to it; sample_batch: images per sampling call.
        phase_classes: classes fine-tuned and sampled per phase (§7.2; 0: all at once).
    """

    space: Literal["pixel", "latent"] = "pixel"
    label_space: Literal["own", "imagenet-1k"] = "own"
    base_dataset: str = ""
    base_data_root: str = ""
    image_size: int = 0
    dit_size: str = "smoke"
    patch: int = 0
    pretrain_steps: int = 200
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-4
    pretrain_ema: float = 0.0
    base_seed: int = 0
    base_checkpoint: str = DIT_XL_2_REPO
    vae_encoder: str = VAE_REPOS["ema"]
    vae_decoder: str = VAE_REPOS["mse"]
    finetune_steps: int = 100
    finetune_batch: int = 8
    finetune_lr: float = 1e-3
    finetune_mode: Literal["difffit", "bitfit", "full"] = "difffit"
    lambda_r: float = LAMBDA_R
    lambda_d: float = LAMBDA_D
    memory_size: int = MEMORY_SIZE
    ema_decay: float = 0.0
    flip: bool = True
    label_drop: float = LABEL_DROP
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    sampling_steps: int = SAMPLING_STEPS
    cfg_scale: float = CFG_SCALE
    cfg_all_channels: bool = False
    max_ipc: int = 100
    sample_batch: int = 100
    phase_classes: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.pretrain_steps >= 1 and self.finetune_steps >= 2, "pretrain_steps >= 1 and finetune_steps >= 2"),
            (min(self.pretrain_batch, self.finetune_batch, self.sample_batch) >= 1, "batch sizes must be >= 1"),
            (self.pretrain_lr > 0 and self.finetune_lr > 0, "learning rates must be > 0"),
            (self.lambda_r >= 0 and self.lambda_d >= 0, "lambda_r and lambda_d must be >= 0"),
            (self.memory_size >= 1 and self.max_ipc >= 1, "memory_size and max_ipc must be >= 1"),
            (0 <= self.ema_decay < 1 and 0 <= self.pretrain_ema < 1, "EMA decays must be in [0, 1)"),
            (0 <= self.label_drop < 1, "label_drop must be in [0, 1)"),
            (self.sampling_steps >= 1 and self.cfg_scale >= 1, "sampling_steps >= 1 and cfg_scale >= 1"),
            (self.image_size >= 0 and self.patch >= 0, "image_size and patch must be >= 0"),
            (self.phase_classes >= 0, "phase_classes must be >= 0 (0: one phase)"),
            (not self.base_dataset or (self.space, self.label_space) == ("pixel", "own"),
             "base_dataset is for the pixel path (space=pixel, label_space=own)"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class Minimax(Method):
    """Minimax diffusion; see the module docstring. Subclasses change only :attr:`stage`."""

    name = "minimax"
    version = 1
    Config = MinimaxConfig
    paper = (
        "Gu, Vahidian, Kungurtsev, Wang, Jiang, You, Chen. Efficient Dataset Distillation via Minimax Diffusion. "
        "CVPR 2024"
    )
    #: ``minimax`` (fine-tune with the configured λ), ``finetune`` (λ = 0) or ``base`` (no fine-tuning).
    stage: ClassVar[str] = "minimax"
    #: Variants ``ddbench run`` evaluates beside this method (the paper's DiT column and the ablation's first row).
    baselines: ClassVar[tuple[str, ...]] = ("dit", "minimax-finetune")
    config: MinimaxConfig
    _base_data: Dataset | None = None  # the loaded superset base_dataset, once per instance

    @classmethod
    def preset_path(cls) -> Path | None:
        """Every variant reads ``minimax.toml``, so a baseline runs with exactly the method's generator settings."""
        path = Path(__file__).parent / "configs" / "minimax.toml"
        return path if path.is_file() else None

    def paper_protocol(self, dataset: str) -> str | None:
        if dataset in IDC_DATASETS:
            return "idc"
        return "idc-32" if dataset in IDC32_DATASETS else None

    def paper_students(self, dataset: str | None) -> Sequence[str] | None:
        if dataset in IDC_DATASETS:
            return PAPER_STUDENTS
        return IDC32_STUDENTS if dataset in IDC32_DATASETS else None

    def cpu_protocol(self, dataset: str) -> str | None:
        return "idc" if dataset in IDC_DATASETS else "idc-32"

    def cpu_students(self, dataset: str | None) -> Sequence[str] | None:
        return ("convnet",)

    def check_ipc(self, ipc: int) -> None:
        """One generation of ``max_ipc`` images per class serves every ipc up to it, and none above."""
        if ipc > self.config.max_ipc:
            raise UserError(
                f"--ipc {ipc} exceeds max_ipc {self.config.max_ipc} (images generated per class); "
                f"add --set max_ipc={ipc}"
            )

    def min_real_per_class(self, ipc: int) -> int:
        return 0  # the generator trains on every train image; no per-ipc real pick

    # -- pieces -----------------------------------------------------------------------------------------------------
    def recipes(self) -> tuple[G.PretrainRecipe, G.FinetuneRecipe, G.SampleRecipe]:
        """The three stage recipes this variant uses (``minimax-finetune`` zeroes the λ's; ``dit`` never fine-tunes)."""
        c = self.config
        zero = self.stage == "finetune"
        return (
            G.PretrainRecipe(c.dit_size, c.patch, c.pretrain_steps, c.pretrain_batch, c.pretrain_lr, c.pretrain_ema,
                             c.flip, c.base_seed),
            G.FinetuneRecipe(c.finetune_steps, c.finetune_batch, c.finetune_lr, c.finetune_mode,
                             0.0 if zero else c.lambda_r, 0.0 if zero else c.lambda_d, c.memory_size, c.ema_decay,
                             c.flip, c.label_drop),
            G.SampleRecipe(c.sampler, c.sampling_steps, c.cfg_scale, c.cfg_all_channels, c.max_ipc, c.sample_batch),
        )  # fmt: skip

    def base_dataset(self, ctx: DistillContext) -> Dataset:
        """The pixel base's pretraining data: the target dataset, or the named superset (loaded once)."""
        c = self.config
        if not c.base_dataset:
            return ctx.dataset
        if self._base_data is None:
            same = c.base_dataset == ctx.dataset.id and ctx.dataset.root is not None
            root = c.base_data_root or (str(ctx.dataset.root) if same else None)
            base = load_dataset(c.base_dataset, root)
            if base.channels != ctx.dataset.channels:
                raise UserError(f"base_dataset {base.id} has {base.channels} channels, {ctx.dataset.id} has "
                                f"{ctx.dataset.channels}; pick a base dataset of the same kind")  # fmt: skip
            self._base_data = base
        return self._base_data

    def condition_ids(self, ctx: DistillContext) -> torch.Tensor:
        """Base-model label of each local class, from the dataset spec's class list (§2, §8.2.1).

        With a superset ``base_dataset`` the label is the base dataset's index of the same class name, so a class
        subset (``--num-classes``, another selection of the same classes) is conditioned on what the base learnt.
        """
        if self.config.base_dataset:
            base = self.base_dataset(ctx)
            index = {name: k for k, name in enumerate(base.classes)}
            missing = [name for name in ctx.dataset.classes if name not in index]
            if missing:
                raise UserError(f"base_dataset {base.id} lacks class(es) {', '.join(missing[:5])} of "
                                f"{ctx.dataset.id}; a base dataset must hold every target class")  # fmt: skip
            return torch.tensor([index[name] for name in ctx.dataset.classes])
        try:
            return base_label_ids(ctx.dataset.classes, self.config.label_space)
        except KeyError as exc:
            raise UserError(
                f"{ctx.dataset.id}: class {exc.args[0]} has no ImageNet-1K index; label_space 'imagenet-1k' needs "
                "wnid classes (use label_space=own)"
            ) from exc

    def base(self, ctx: DistillContext) -> G.Generator:
        """The base generator: pretrained here (pixel path) or read from the checkpoint (latent path)."""
        c = self.config
        if c.space == "latent":
            return G.latent_base(c.base_checkpoint, c.vae_encoder, c.vae_decoder, device=ctx.device)
        return G.pixel_base(self.base_dataset(ctx), self.recipes()[0], image_size=c.image_size or ctx.dataset.img_size,
                            device=ctx.device, cache=ctx.cache, progress=ctx.progress)  # fmt: skip

    def generator(self, ctx: DistillContext, cond: torch.Tensor, base: G.Generator | None = None) -> G.Generator:
        """The model this variant samples from: the base, or the base fine-tuned under this variant's λ's.

        ``ctx.dataset`` and ``cond`` are one phase's classes when the run is phased (:meth:`phases`).
        """
        base = base or self.base(ctx)
        if cond.numel() and int(cond.max()) >= base.num_classes:
            raise UserError(f"condition id {int(cond.max())} is outside the base model's {base.num_classes} classes")
        if self.stage == "base":
            return base
        return G.finetuned(base, ctx.dataset, cond, self.recipes()[1], seed=ctx.seed, device=ctx.device,
                           cache=ctx.cache, progress=ctx.progress)  # fmt: skip

    def phases(self, num_classes: int) -> list[tuple[int, int]]:
        """The class ranges fine-tuned and sampled one after another (§7.2); one range when unphased."""
        size = self.config.phase_classes
        if self.stage == "base" or not size or size >= num_classes:
            return [(0, num_classes)]
        return [(lo, min(lo + size, num_classes)) for lo in range(0, num_classes, size)]

    def distill(self, ctx: DistillContext) -> DistilledSet:
        require_diffusers()
        c = self.config
        self.check_ipc(ctx.ipc)
        cond = self.condition_ids(ctx)
        ranges = self.phases(ctx.dataset.num_classes)
        phased = len(ranges) > 1
        base = self.base(ctx)
        images, labels, generations, generators, losses = [], [], [], [], []
        for lo, hi in ranges:
            seed = derive_seed(ctx.seed, "minimax-phase", lo) if phased else ctx.seed
            sub = dataclasses.replace(ctx, dataset=ctx.dataset.with_class_range(lo, hi), seed=seed)
            if phased:
                logger.info("minimax phase %d/%d: classes %d..%d", lo // c.phase_classes + 1, len(ranges), lo, hi - 1)
            gen = self.generator(sub, cond[lo:hi], base)
            out, art = G.generation(gen, sub.dataset, cond[lo:hi], self.recipes()[2], seed=seed, device=ctx.device,
                                    cache=ctx.cache, progress=ctx.progress)  # fmt: skip
            images.append(out["images"])
            labels.append(out["labels"] + lo)
            generations.append(art.id)
            generators.append(gen.artifact.id if gen.artifact is not None else gen.key)
            if gen.losses is not None:  # the terms a fine-tune optimised, so a record shows whether λ acted
                losses.append(gen.mean_losses(gen.losses.shape[0] // 2))
        perms = ipc_permutations(ctx.dataset.num_classes, c.max_ipc, ctx.seed)
        idx = ipc_subset(perms, ctx.ipc)
        meta = {
            "generation": generations if phased else generations[0],
            "generator": generators if phased else generators[0],
            "stage": self.stage,
            "condition_ids": cond.tolist(),
            "ipc_indices": {str(k): perms[k, : ctx.ipc].tolist() for k in range(perms.shape[0])},
        }
        if losses:
            meta["finetune_losses_2nd_half"] = losses if phased else losses[0]
        if phased:
            meta["phases"] = [list(r) for r in ranges]
        return DistilledSet(torch.cat(images)[idx], torch.cat(labels)[idx], "uint8", meta=meta)


class DiT(Minimax):
    """The paper's "DiT" column: the base model sampled without fine-tuning (issue #20), same sampler and IPC."""

    name = "dit"
    stage = "base"
    baselines = ()
    paper = "DiT baseline of Minimax diffusion (Gu et al., CVPR 2024): the pretrained DiT without fine-tuning"


class DiTFinetune(Minimax):
    """The fine-tune-only ablation (λ_r = λ_d = 0; plain DiffFit fine-tuning, the ablation's first row)."""

    name = "minimax-finetune"
    stage = "finetune"
    baselines = ()
    paper = "fine-tune-only ablation of Minimax diffusion (Gu et al., CVPR 2024): lambda_r = lambda_d = 0"
