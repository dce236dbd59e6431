"""Minimax's generators as cached artifacts: the base model, the fine-tuned model and one generation of images.

Three stages, each an artifact of :mod:`ddbench.artifacts` keyed by everything that determines it (spec
``minimax.md`` §3, §4, §9):

1. **Base model.** Pixel path (§9, no pretrained weights offline): a class-conditional DiT pretrained here on all
   classes of the dataset (label space ``own``), plain diffusion loss with the per-sample label drop, AdamW
   (:class:`PretrainRecipe`); artifact kind ``diffusion/base``, key = the data identity + the recipe. Latent path
   (§1): a diffusers DiT read from a user's folder (``--set base_checkpoint=PATH``) or the Hugging Face cache, never
   downloaded; it is not copied into the cache, its identity (resolved path + sha256 of its weight files) enters
   the later keys.
2. **Fine-tuned model** (§3): the base fine-tuned with L_diff + λ_r·L_r + λ_d·L_d (:class:`FinetuneRecipe`;
   λ_r = λ_d = 0 is the fine-tune-only ablation). Only the trainable parameters' EMA is stored (frozen ones never
   move, §3.3), so a fine-tuned DiT-XL/2 is a few MB; kind ``diffusion/finetuned``, key = base key + data +
   recipe + seed.
3. **Generation** (§4): ``per_class`` images of every class sampled from the EMA weights with CFG, stored as uint8
   at the dataset's size (the original saves PNGs); kind ``diffusion/generations``, key = model key + sampling
   recipe + seed. Every IPC is a nested seeded subset of this one generation (:mod:`.sampling`).

The space the diffusion runs in is a :class:`DiffusionSpace`: pixels in [−1, 1] (pixel path) or 0.18215-scaled
VAE latents (latent path: encode with a sample of the posterior, decode with the decoder VAE, §1).

Sampling draws every image from one stream seeded from (seed, "sample"), classes in order, as ``sample.py`` does;
the deviation is the batch (``SampleRecipe.batch`` images of consecutive classes per call instead of 1), which
changes which draw lands in which image but not their distribution.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.artifacts import CACHE, Artifact, ArtifactCache
from ddbench.config import derive_seed
from ddbench.data.identity import dataset_key
from ddbench.errors import UserError
from ddbench.io import sha256_file
from ddbench.ops.diffusion import models as M
from ddbench.ops.diffusion.finetune import finetune_losses
from ddbench.ops.diffusion.labels import LABEL_DROP
from ddbench.ops.diffusion.minimax import MinimaxMemory
from ddbench.ops.diffusion.sampling import sample
from ddbench.ops.diffusion.schedule import ProcessTables, sampling_scheduler, training_scheduler

if TYPE_CHECKING:
    from ddbench.data import Dataset

logger = logging.getLogger(__name__)

#: Bump when a change moves any generator's numbers (part of every key below).
GENERATOR_VERSION = 1
KIND_BASE, KIND_FINETUNED, KIND_GENERATION = "diffusion/base", "diffusion/finetuned", "diffusion/generations"
#: Entry of a fine-tuned artifact holding its loss trace (not a parameter name: those contain dots).
TRACE_KEY = "_losses"
ProgressFn = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


# -- recipes ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainRecipe:
    """Pixel-path base pretraining (spec §9.2 "pretrain"): full training of a randomly initialised DiT.

    Attributes:
        size: a :data:`~.models.DIT_SIZES` name.
        patch: patch side (0: the size's default).
        steps, batch, lr: AdamW steps (weight decay 0), batch size, learning rate.
        ema: EMA decay of the stored weights (0: store the live weights).
        flip: random horizontal flip of the training images (the original's preprocessing).
        seed: initialisation and data-order seed (the base model is shared by every distillation seed).
    """

    size: str = "smoke"
    patch: int = 0
    steps: int = 200
    batch: int = 32
    lr: float = 1e-4
    ema: float = 0.0
    flip: bool = True
    seed: int = 0


@dataclass(frozen=True)
class FinetuneRecipe:
    """Minimax fine-tuning (spec §3): AdamW with constant lr and weight decay 0, EMA for sampling.

    Attributes:
        steps, batch, lr: optimizer steps (8 epochs ≈ 12k at ImageWoof in the paper), batch, learning rate.
        mode: ``difffit`` (biases, class table, γ factors), ``bitfit`` or ``full``.
        lambda_r, lambda_d: weights of the representativeness and diversity terms (0, 0: plain fine-tuning).
        memory: FIFO capacity per class of each memory.
        ema: EMA decay (0: 1 − 1.2/steps, which is the paper's 0.9999 at 12k steps).
        flip: random horizontal flip of the training images.
        label_drop: probability of the null condition.
    """

    steps: int = 100
    batch: int = 8
    lr: float = 1e-3
    mode: M.FinetuneMode = "difffit"
    lambda_r: float = 0.002
    lambda_d: float = 0.008
    memory: int = 64
    ema: float = 0.0
    flip: bool = True
    label_drop: float = LABEL_DROP

    @property
    def ema_decay(self) -> float:
        return self.ema or M.ema_decay_for(self.steps)


@dataclass(frozen=True)
class SampleRecipe:
    """Sampling (spec §4): 50 respaced ancestral DDPM steps (or DDIM), CFG 4.0, ``per_class`` images per class."""

    sampler: str = "ddpm"
    steps: int = 50
    cfg_scale: float = 4.0
    cfg_all_channels: bool = False
    per_class: int = 100
    batch: int = 100


# -- spaces ----------------------------------------------------------------------------------------------------------
def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images to ``size`` (bilinear, antialiased when shrinking); unchanged at that size already."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@dataclass
class DiffusionSpace:
    """Where the diffusion runs: ``[−1, 1]`` pixels at ``image_size``, or VAE latents of images at ``image_size``.

    Attributes:
        image_size: side of the images the model (or the VAE) sees; data are resized to it.
        encoder, decoder: the VAEs of the latent path (None: pixel path).
    """

    image_size: int
    encoder: nn.Module | None = None
    decoder: nn.Module | None = None

    @property
    def latent(self) -> bool:
        return self.encoder is not None

    def to_model(self, images: torch.Tensor, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` → the model's clean samples z₀ (stochastic VAE encoding on the latent path)."""
        x = _resize(images.to(device).float() / 127.5 - 1.0, self.image_size)
        if self.encoder is None:
            return x
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return M.encode_latents(self.encoder, x, generator=generator)

    def to_uint8(self, z: torch.Tensor, size: int, channels: int) -> torch.Tensor:
        """Model samples → uint8 images at the dataset's ``size``: clamp to [−1, 1] (decoding first), quantize."""
        x = M.decode_latents(self.decoder, z) if self.decoder is not None else (z.clamp(-1.0, 1.0) + 1.0) / 2.0
        if channels == 1 and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        x = _resize(x.float(), size).clamp(0.0, 1.0)
        return torch.round(x * 255.0).to(torch.uint8).cpu()


# -- training loop ---------------------------------------------------------------------------------------------------
def _batches(n: int, batch: int, generator: torch.Generator):
    """Endless seeded epochs of ``batch`` indices (drop_last; the whole set when it is smaller than a batch)."""
    batch = min(batch, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch + 1, batch):
            yield perm[i : i + batch]


#: The losses :func:`train_diffusion` reports per step.
LOGGED_LOSSES = ("total", "diffusion", "representativeness", "diversity")


def train_diffusion(
    model: nn.Module,
    dataset: Dataset,
    space: DiffusionSpace,
    cond_ids: torch.Tensor,
    *,
    num_classes: int,
    steps: int,
    batch: int,
    params: list[nn.Parameter],
    lr: float,
    ema_decay: float,
    generator: torch.Generator,
    device: torch.device,
    flip: bool = True,
    memory: MinimaxMemory | None = None,
    lambda_r: float = 0.0,
    lambda_d: float = 0.0,
    label_drop: float = LABEL_DROP,
    progress: ProgressFn = _no_progress,
    stage: str = "diffusion",
    trace: list[dict[str, float]] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``model`` on every train image of ``dataset`` and return its EMA copy and the last losses.

    One step: a seeded batch (drop_last), optional flip, z₀ in the model space, then
    :func:`~.finetune.finetune_losses` (plain diffusion when ``memory`` is None), backward, AdamW (weight decay 0,
    constant lr), EMA update over all parameters. The same loop pretrains the pixel base model (all parameters,
    no memory) and fine-tunes (§3).

    Args:
        cond_ids: ``[num_local_classes]`` base-model label of each local class (:func:`~.labels.base_label_ids`).
        num_classes: size of the base model's label space (the null id).
        ema_decay: 0 disables the EMA (the live model is returned).
        trace: when given, every step's losses are appended to it (the minimax terms are computed whenever
            ``memory`` is given, even at λ = 0, so a plain fine-tune can be traced against a minimax one).
    """
    scheduler = training_scheduler(learned_variance=model.config.out_channels == 2 * model.config.in_channels)
    tables = ProcessTables.from_scheduler(scheduler)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.999))
    ema = M.ema_copy(model) if ema_decay else None
    labels = dataset.train.labels
    batches = _batches(len(dataset.train), batch, generator)
    model.train()
    last: dict[str, float] = {}
    for step in range(steps):
        idx = next(batches)
        images = dataset.train.load(idx)
        if flip:
            flips = torch.rand(idx.numel(), generator=generator) < 0.5
            images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
        z0 = space.to_model(images, device, generator)
        local = labels[idx].to(device)
        losses = finetune_losses(
            model, z0, local, cond_ids.to(device)[local], scheduler=scheduler, tables=tables,
            num_classes=num_classes, generator=generator, memory=memory, lambda_r=lambda_r, lambda_d=lambda_d,
            label_drop=label_drop,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        optimizer.step()
        if ema is not None:
            M.ema_update(ema, model, ema_decay)
        last = {k: float(getattr(losses, k).detach()) for k in LOGGED_LOSSES}
        if trace is not None:
            trace.append(last)
        if not torch.isfinite(losses.total):
            raise RuntimeError(f"{stage}: loss became {float(losses.total)} at step {step}")
        progress(stage, step + 1, steps)
    model.eval()
    return (ema if ema is not None else model), last


# -- stage 1: base ---------------------------------------------------------------------------------------------------
@dataclass
class Generator:
    """A loaded denoiser with what sampling and keys need.

    Attributes:
        model: the diffusers DiT (EMA weights where there are any), eval mode.
        key: the JSON-able identity of these weights (enters every later key).
        num_classes: size of its label space (the null id).
        space: where it runs.
        artifact: the cache entry (None for a user checkpoint used as is).
        losses: a fine-tuned generator's per-step losses ``[steps, len(LOGGED_LOSSES)]``, columns in
            :data:`LOGGED_LOSSES` order (None for a base model, or a fine-tune cached before the trace was stored).
    """

    model: nn.Module
    key: dict[str, Any]
    num_classes: int
    space: DiffusionSpace
    artifact: Artifact | None = None
    losses: torch.Tensor | None = None

    def mean_losses(self, first: int = 0) -> dict[str, float]:
        """Mean of each logged loss over steps ``first:`` of the fine-tune trace (empty without a trace)."""
        if self.losses is None or self.losses.shape[0] <= first:
            return {}
        means = self.losses[first:].mean(0).tolist()
        return dict(zip(LOGGED_LOSSES, means, strict=True))


def _dit_size(recipe: PretrainRecipe) -> M.DiTSize:
    size = M.DIT_SIZES.get(recipe.size)
    if size is None:
        raise UserError(f"unknown DiT size {recipe.size!r}; use one of {', '.join(M.DIT_SIZES)}")
    return dataclasses.replace(size, patch=recipe.patch) if recipe.patch else size


def pixel_base(
    dataset: Dataset,
    recipe: PretrainRecipe,
    *,
    image_size: int,
    device: torch.device,
    cache: ArtifactCache = CACHE,
    progress: ProgressFn = _no_progress,
) -> Generator:
    """The pixel-space base DiT pretrained on all classes of ``dataset`` (own label space), cached."""
    size = _dit_size(recipe)
    if image_size % size.patch:
        raise UserError(f"image size {image_size} is not a multiple of the DiT patch {size.patch}; set patch")
    k = dataset.num_classes
    key = {
        "version": GENERATOR_VERSION,
        "path": "pixel",
        "data": dataset_key(dataset),
        "image_size": image_size,
        "channels": dataset.channels,
        "dit": dataclasses.asdict(size),
        "recipe": dataclasses.asdict(recipe),
    }

    def build_model() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(recipe.seed, "dit-init"))
            return M.build_dit(k, image_size, dataset.channels, size).to(device)

    def compute() -> dict[str, Any]:
        model = build_model()
        space = DiffusionSpace(image_size)
        gen = torch.Generator().manual_seed(derive_seed(recipe.seed, "pretrain"))
        trained, last = train_diffusion(
            model, dataset, space, torch.arange(k), num_classes=k, steps=recipe.steps, batch=recipe.batch,
            params=list(model.parameters()), lr=recipe.lr, ema_decay=recipe.ema, generator=gen, device=device,
            flip=recipe.flip, progress=progress, stage="minimax: pretrain base DiT",
        )  # fmt: skip
        logger.info("pixel base DiT pretrained (%d steps): last losses %s", recipe.steps, last)
        return dict(trained.state_dict())

    state, art = cache.get_or_build_tensors(KIND_BASE, key, compute, name=f"{dataset.id}-dit-{recipe.size}")
    model = build_model()
    model.load_state_dict(state)
    return Generator(model.eval(), {"artifact": art.id, **key}, k, DiffusionSpace(image_size), art)


def _weights_identity(folder: Path) -> list[tuple[str, str]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return [(p.relative_to(folder).as_posix(), sha256_file(p)) for p in files]


def resolve_checkpoint(source: str, subfolder: str) -> tuple[Path, str | None]:
    """A local diffusers folder (``PATH`` or ``PATH/<subfolder>``) or a cached hub repo id → (folder, subfolder).

    Raises:
        UserError: neither a folder nor a repo in the local Hugging Face cache (nothing is downloaded).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return (path, subfolder) if (path / subfolder).is_dir() else (path, None)
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(source, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise UserError(
            f"{source!r} is neither a folder nor a model in the local Hugging Face cache (nothing is downloaded; "
            "pass --set base_checkpoint=PATH to a diffusers folder)"
        ) from exc
    return (folder, subfolder) if (folder / subfolder).is_dir() else (folder, None)


def latent_base(checkpoint: str, encoder: str, decoder: str, *, device: torch.device) -> Generator:
    """The pretrained DiT + VAEs of the latent path, from folders or the HF cache (never downloaded).

    The DiT sample size and the VAE's downsampling give the image size (DiT-XL/2 + SD VAE: 32 × 8 = 256 px).
    """
    dit_dir, dit_sub = resolve_checkpoint(checkpoint, "transformer")
    model = M.load_dit(dit_dir, subfolder=dit_sub).to(device).eval()
    vaes = []
    for source in (encoder, decoder):
        vae_dir, vae_sub = resolve_checkpoint(source, "vae")
        vaes.append((M.load_vae(vae_dir, subfolder=vae_sub).to(device), vae_dir / (vae_sub or "")))
    (enc, enc_dir), (dec, dec_dir) = vaes
    factor = 2 ** (len(enc.config.block_out_channels) - 1)
    space = DiffusionSpace(model.config.sample_size * factor, enc, dec)
    key = {
        "version": GENERATOR_VERSION,
        "path": "latent",
        "dit": _weights_identity(dit_dir / (dit_sub or "")),
        "encoder": _weights_identity(enc_dir),
        "decoder": _weights_identity(dec_dir),
    }
    return Generator(model, key, int(model.config.num_embeds_ada_norm), space)


# -- stage 2: fine-tuned ---------------------------------------------------------------------------------------------
def _trainable_names(model: nn.Module, mode: M.FinetuneMode) -> list[str]:
    M.mark_trainable(model, mode)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def finetuned(
    base: Generator,
    dataset: Dataset,
    cond_ids: torch.Tensor,
    recipe: FinetuneRecipe,
    *,
    seed: int,
    device: torch.device,
    cache: ArtifactCache = CACHE,
    progress: ProgressFn = _no_progress,
) -> Generator:
    """``base`` fine-tuned on ``dataset``'s train images with the minimax terms (§3), cached by its EMA deltas.

    The working copy gets DiffFit γ factors (``difffit`` mode); the artifact holds the EMA of the trainable
    parameters, which is all that differs from the base (the EMA of a frozen parameter stays equal to it), and the
    per-step losses (:attr:`Generator.losses`). The memories are kept at λ = 0 too: the weights are then bit for bit
    a plain fine-tune's, and the trace shows the terms a minimax run optimises, so the two can be compared.
    """
    key = {
        "version": GENERATOR_VERSION,
        "base": base.key,
        "data": dataset_key(dataset),
        "cond_ids": cond_ids.tolist(),
        "recipe": dataclasses.asdict(recipe),
        "seed": seed,
    }

    def working_copy() -> nn.Module:
        import copy

        model = copy.deepcopy(base.model).to(device)
        if recipe.mode == "difffit":
            M.add_difffit_gammas(model)
        return model

    def compute() -> dict[str, Any]:
        model = working_copy()
        params = M.mark_trainable(model, recipe.mode)
        memory = MinimaxMemory(recipe.memory)
        gen = torch.Generator().manual_seed(derive_seed(seed, "minimax-finetune"))
        trace: list[dict[str, float]] = []
        ema, last = train_diffusion(
            model, dataset, base.space, cond_ids, num_classes=base.num_classes, steps=recipe.steps,
            batch=recipe.batch, params=params, lr=recipe.lr, ema_decay=recipe.ema_decay, generator=gen,
            device=device, flip=recipe.flip, memory=memory, lambda_r=recipe.lambda_r, lambda_d=recipe.lambda_d,
            label_drop=recipe.label_drop, progress=progress, stage="minimax: fine-tune", trace=trace,
        )  # fmt: skip
        logger.info("minimax fine-tune (%d steps, λ_r %g, λ_d %g): last losses %s", recipe.steps, recipe.lambda_r,
                    recipe.lambda_d, last)  # fmt: skip
        names = set(_trainable_names(model, recipe.mode))
        state = {n: p.detach() for n, p in ema.named_parameters() if n in names}
        return {**state, TRACE_KEY: torch.tensor([[t[k] for k in LOGGED_LOSSES] for t in trace])}

    name = f"{dataset.id}-ft"
    state, art = cache.get_or_build_tensors(KIND_FINETUNED, key, compute, name=name)
    state = dict(state)
    losses = state.pop(TRACE_KEY, None)
    model = working_copy()
    missing = set(_trainable_names(model, recipe.mode)) - set(state)
    if missing:
        raise RuntimeError(f"fine-tuned artifact {art.id} lacks {sorted(missing)[:3]}")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in state.items():
            params[n].copy_(v)
    model.eval().requires_grad_(False)
    return Generator(model, {"artifact": art.id, **key}, base.num_classes, base.space, art, losses)


# -- stage 3: generation ---------------------------------------------------------------------------------------------
def generation(
    gen: Generator,
    dataset: Dataset,
    cond_ids: torch.Tensor,
    recipe: SampleRecipe,
    *,
    seed: int,
    device: torch.device,
    cache: ArtifactCache = CACHE,
    progress: ProgressFn = _no_progress,
) -> tuple[Mapping[str, torch.Tensor], Artifact]:
    """``per_class`` uint8 images per local class (class-major), sampled from ``gen`` with CFG, cached.

    Returns ``{"images": [K·per_class, C, H, W] uint8, "labels": [K·per_class]}`` and the artifact.
    """
    key = {
        "version": GENERATOR_VERSION,
        "model": gen.key,
        "cond_ids": cond_ids.tolist(),
        "recipe": dataclasses.asdict(recipe),
        "out": [dataset.channels, dataset.img_size],
        "seed": seed,
    }
    cfg = gen.model.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    k = len(cond_ids)

    def compute() -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(derive_seed(seed, "sample"))
        wanted = torch.as_tensor(cond_ids, dtype=torch.long).repeat_interleave(recipe.per_class)
        learned = cfg.out_channels == 2 * cfg.in_channels
        images = []
        for start in range(0, wanted.numel(), recipe.batch):
            labels = wanted[start : start + recipe.batch].to(device)
            scheduler = sampling_scheduler(recipe.sampler, recipe.steps, learned_variance=learned)
            z = sample(gen.model, labels, scheduler=scheduler, shape=shape, num_classes=gen.num_classes,
                       generator=g, cfg_scale=recipe.cfg_scale, cfg_all_channels=recipe.cfg_all_channels)  # fmt: skip
            images.append(gen.space.to_uint8(z, dataset.img_size, dataset.channels))
            progress("minimax: sample", start + labels.numel(), wanted.numel())
        return {"images": torch.cat(images), "labels": torch.arange(k).repeat_interleave(recipe.per_class)}

    return cache.get_or_build_tensors(KIND_GENERATION, key, compute, name=f"{dataset.id}-gen")


__all__ = [
    "GENERATOR_VERSION",
    "LOGGED_LOSSES",
    "TRACE_KEY",
    "DiffusionSpace",
    "FinetuneRecipe",
    "Generator",
    "PretrainRecipe",
    "SampleRecipe",
    "finetuned",
    "generation",
    "latent_base",
    "pixel_base",
    "resolve_checkpoint",
    "train_diffusion",
]
