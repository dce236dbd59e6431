"""The denoisers of Minimax diffusion as diffusers modules, and what fine-tuning does to them.

**DiT** (``diffusers.DiTTransformer2DModel``, spec ``minimax.md`` §1, §9.1). diffusers gives every block its own
timestep + label embedder (``transformer_blocks.i.norm1.emb``, the output modulation reuses block 0's) and draws
the 10% label dropout separately in each of them, while the original DiT has one embedder and one drop per sample
(§8.2.14). :func:`share_conditioning` restores the original structure: block 0's embedder is assigned to every
block and its built-in dropout is switched off (the table keeps its extra null row), and labels are dropped outside
the model (:func:`ddbench.ops.diffusion.labels.drop_labels`). Tied, diffusers' DiT-XL/2 has exactly the original's
675,129,632 parameters (counting the fixed position embedding, a buffer in diffusers).

Sizes (:data:`DIT_SIZES`): ``smoke`` is spec §9.2's CPU model (hidden 128 = 4 heads × 32, 4 blocks, patch 4:
64 tokens at 32 px), ``bench`` the CPU-bench model, ``xl-2`` DiT-XL/2 (28 blocks, hidden 1152, patch 2 on the
32×32×4 latent). ``learn_sigma`` models emit 2C channels (ε, then the variance interpolation).

**Fine-tuning** (§3.2, §3.3). DiffFit-style: only biases, the class-embedding table (all rows, null included) and
DiffFit's γ scale factors train. The original selects them by the name filter {bias, norm, gamma, y_embed}; on
diffusers names "norm" would unfreeze the adaLN weights (``norm1.linear.weight``) and the whole embedder
(``norm1.emb.…``), so :func:`mark_trainable` selects bias / class_embedder / gamma explicitly. γ factors
(:func:`add_difffit_gammas`, initialised to 1, so they change nothing until trained) sit in the first half of the
blocks: on the attention and MLP residual branches and, inside attention, on the q/k/v outputs (the original's
3·D qkv γ, split as diffusers splits qkv) and the output projection. They are forward hooks multiplying a module's
output, so the diffusers module tree and its checkpoint keys are untouched; the γ parameters are extra keys
(``…difffit_gamma``), which is why the original loads its checkpoint with strict=False.

EMA (:func:`ema_copy`, :func:`ema_update`): initialised from the starting weights and updated every step over all
parameters with decay 0.9999, frozen ones included (they stay equal). For runs shorter than the original's 12k
steps, :func:`ema_decay_for` keeps the share of the starting weights at the end (0.9999^12000 ≈ 30%).

**UNet2DModel** (:func:`pixel_unet`) is spec §9.1's alternative: one extra class row for the null label, dropout done
outside as for DiT. **VAE** (§1): latents are 0.18215 × a *sample* of the posterior (stochastic encoding, §8.2.6);
:func:`tiny_vae` is a random 0.66M-parameter AutoencoderKL for plumbing tests of the latent path only.

Pretrained weights are only ever read from disk or the Hugging Face cache (``local_files_only``); nothing here
downloads.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ddbench.errors import UserError
from ddbench.ops.diffusion import require_diffusers

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DiTTransformer2DModel, UNet2DModel

logger = logging.getLogger(__name__)

#: Latent scale factor of Stable Diffusion's VAE.
VAE_SCALE = 0.18215
#: Hugging Face ids of the pretrained pieces of the faithful path (read from the local cache only).
DIT_XL_2_REPO = "facebook/DiT-XL-2-256"
VAE_REPOS = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}


@dataclass(frozen=True)
class DiTSize:
    """Transformer size: ``heads`` × ``head_dim`` = hidden width, ``layers`` blocks, ``patch`` side in pixels."""

    heads: int
    head_dim: int
    layers: int
    patch: int

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim


DIT_SIZES: dict[str, DiTSize] = {
    "smoke": DiTSize(heads=4, head_dim=32, layers=4, patch=4),
    "bench": DiTSize(heads=6, head_dim=64, layers=8, patch=4),
    "xl-2": DiTSize(heads=16, head_dim=72, layers=28, patch=2),
}


def share_conditioning(model: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """Tie every block's timestep + label embedder to block 0's and switch its label dropout off (in place).

    Afterwards one forward pass looks every label up in one table, so the label a sample is conditioned on is the
    same in every block and in the output modulation, and labels must be dropped by the caller.
    """
    blocks = model.transformer_blocks
    first = blocks[0].norm1.emb
    for block in blocks[1:]:
        block.norm1.emb = first
    table = first.class_embedder
    if table.embedding_table.num_embeddings != table.num_classes + 1:
        raise ValueError("the DiT label table has no null row; build it with the default class dropout")
    table.dropout_prob = 0.0
    return model


def conditioning_drift(model: DiTTransformer2DModel) -> float:
    """Max |difference| between block 0's embedder and any other block's (0 for converted original weights)."""
    ref = dict(model.transformer_blocks[0].norm1.emb.named_parameters())
    drift = 0.0
    for block in model.transformer_blocks[1:]:
        for name, p in block.norm1.emb.named_parameters():
            drift = max(drift, float((p - ref[name]).detach().abs().max()))
    return drift


def build_dit(
    num_classes: int,
    sample_size: int,
    channels: int,
    size: DiTSize | str = "smoke",
    *,
    learn_sigma: bool = True,
) -> DiTTransformer2DModel:
    """A randomly initialised class-conditional DiT with shared conditioning (:func:`share_conditioning`).

    Args:
        num_classes: real classes; the label table gets one more row, the null class ``num_classes``.
        sample_size: input side (pixels, or latent side on the latent path).
        channels: input channels (3 for pixels, 4 for SD latents).
        size: a :data:`DIT_SIZES` name or a :class:`DiTSize`.
        learn_sigma: 2·channels outputs (ε and the learned-range variance) instead of ε only.
    """
    diffusers = require_diffusers()
    size = DIT_SIZES[size] if isinstance(size, str) else size
    if sample_size % size.patch:
        raise ValueError(f"sample size {sample_size} is not a multiple of the patch size {size.patch}")
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=channels,
        out_channels=2 * channels if learn_sigma else channels,
        num_layers=size.layers,
        sample_size=sample_size,
        patch_size=size.patch,
        num_embeds_ada_norm=num_classes,
        norm_type="ada_norm_zero",
    )
    return share_conditioning(model)


def dit_xl_2(num_classes: int = 1000) -> DiTTransformer2DModel:
    """DiT-XL/2 for 256-px images (32×32×4 latents), learned sigma, randomly initialised (use ``torch.device('meta')``
    to inspect it without allocating 2.7 GB)."""
    return build_dit(num_classes, 32, 4, "xl-2")


def tiny_latent_dit(num_classes: int, latent_size: int = 16) -> DiTTransformer2DModel:
    """A 2-block random DiT on 4-channel latents, for plumbing tests of the latent path with :func:`tiny_vae`."""
    return build_dit(num_classes, latent_size, 4, DiTSize(heads=2, head_dim=16, layers=2, patch=2))


def _not_found(what: str, source: str | Path, hint: str, exc: Exception) -> UserError:
    return UserError(f"cannot load the {what} from {source} without downloading ({hint}): {exc}".splitlines()[0])


def load_dit(source: str | Path = DIT_XL_2_REPO, *, subfolder: str | None = "transformer") -> DiTTransformer2DModel:
    """A pretrained diffusers DiT from a local folder or the Hugging Face cache, with shared conditioning.

    Converted DiT checkpoints copy the original's single embedder into every block; the copies are checked to be
    equal before they are tied (a warning reports the drift otherwise, and block 0's copy is kept).

    Raises:
        UserError: no such checkpoint on disk (nothing is downloaded), or an original-format ``.pt`` file.
    """
    diffusers = require_diffusers()
    if str(source).endswith((".pt", ".pth")):
        raise UserError(
            f"{source} is an original DiT checkpoint; convert it to the diffusers format (diffusers' "
            "scripts/convert_dit_to_diffusers.py) or pass a diffusers folder / cached repo id"
        )
    try:
        model = diffusers.DiTTransformer2DModel.from_pretrained(source, subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found("DiT", source, f"expected a diffusers model with a {subfolder or '.'} folder", exc) from exc
    drift = conditioning_drift(model)
    if drift > 0:
        logger.warning("DiT %s: per-block embedders differ by up to %.3g; tying them to block 0's", source, drift)
    return share_conditioning(model)


def load_vae(source: str | Path = VAE_REPOS["ema"], *, subfolder: str | None = None) -> AutoencoderKL:
    """A pretrained AutoencoderKL from a local folder or the Hugging Face cache (never downloaded), in eval mode.

    Fine-tuning encodes with ``sd-vae-ft-ema``, sampling decodes with ``sd-vae-ft-mse`` in the original scripts
    (:data:`VAE_REPOS`).
    """
    diffusers = require_diffusers()
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(source, subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found("VAE", source, "expected a diffusers AutoencoderKL", exc) from exc
    return vae.eval().requires_grad_(False)


def random_vae(block_out_channels: tuple[int, ...], sample_size: int, layers_per_block: int = 1) -> AutoencoderKL:
    """A randomly initialised AutoencoderKL with 4 latent channels (side / 2^(levels−1)), in eval mode, frozen."""
    diffusers = require_diffusers()
    levels = len(block_out_channels)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
        scaling_factor=VAE_SCALE,
    )
    return vae.eval().requires_grad_(False)


def tiny_vae(sample_size: int = 32) -> AutoencoderKL:
    """A random AutoencoderKL (two blocks of 32/64 channels, 4 latent channels, side / 2): plumbing tests only."""
    return random_vae((32, 64), sample_size)


def sd_vae_random() -> AutoencoderKL:
    """Stable Diffusion's VAE architecture (``sd-vae-ft-*``: 128/256/512/512, 2 layers per block, 256 px → 4×32×32),
    randomly initialised: for shape and speed benchmarks of the latent path only, never for images."""
    return random_vae((128, 256, 512, 512), 256, layers_per_block=2)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """z₀ = 0.18215 · a sample of q(z | x) for images ``x`` in [−1, 1] (stochastic, as the original fine-tuning)."""
    posterior = vae.encode(x).latent_dist
    return posterior.sample(generator=generator) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] from latents: decode(z / 0.18215), clamped to [−1, 1], mapped to [0, 1]."""
    x = vae.decode(z / vae.config.scaling_factor).sample
    return (x.clamp(-1.0, 1.0) + 1.0) / 2.0


def pixel_unet(num_classes: int, sample_size: int = 32, channels: int = 3, *, learn_sigma: bool = True) -> UNet2DModel:
    """The UNet2DModel alternative of spec §9.1 at the smoke DiT's size (1.1M parameters at 32 px, 3 channels).

    Channels 32/64/64, one residual block per level, self-attention at the middle level; the class table has
    ``num_classes + 1`` rows, the last being the null class. Forward: ``(x, t, class_labels=y).sample``.
    """
    diffusers = require_diffusers()
    return diffusers.UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=2 * channels if learn_sigma else channels,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
        num_class_embeds=num_classes + 1,
    )


# -- DiffFit ---------------------------------------------------------------------------------------------------------
GAMMA_NAME = "difffit_gamma"


def _scale_output(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output * getattr(module, GAMMA_NAME)


def _attach_gamma(module: nn.Module, dim: int) -> None:
    if hasattr(module, GAMMA_NAME):
        raise ValueError(f"{type(module).__name__} already has DiffFit γ factors")
    weight = next(module.parameters())
    module.register_parameter(GAMMA_NAME, nn.Parameter(torch.ones(dim, device=weight.device, dtype=weight.dtype)))
    module.register_forward_hook(_scale_output)


def add_difffit_gammas(model: DiTTransformer2DModel, num_blocks: int | None = None) -> list[str]:
    """Add DiffFit's γ factors (ones) to the first ``num_blocks`` blocks (default: the first half), in place.

    Per block: γ on the attention branch, on the MLP branch, on each of the q, k and v projections, and on the
    attention output projection, each of the hidden width. Returns the new parameter names.
    """
    blocks = model.transformer_blocks
    num_blocks = len(blocks) // 2 if num_blocks is None else num_blocks
    dim = model.inner_dim
    for block in blocks[:num_blocks]:
        attn = block.attn1
        for module in (attn, block.ff, attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
            _attach_gamma(module, dim)
    return [name for name, _ in model.named_parameters() if name.endswith(GAMMA_NAME)]


#: Name fragments of the parameters each fine-tuning mode trains (None: all).
TRAINABLE: dict[str, tuple[str, ...] | None] = {
    "difffit": ("bias", "class_embedder", "gamma"),
    "bitfit": ("bias",),
    "full": None,
}
FinetuneMode = Literal["difffit", "bitfit", "full"]


def mark_trainable(model: nn.Module, mode: FinetuneMode = "difffit") -> list[nn.Parameter]:
    """Set ``requires_grad`` by fine-tuning mode and return the trainable parameters (each once, tied ones too).

    ``difffit`` (the method's default, §3.2): biases, the class table and the γ factors; ``bitfit``: biases only
    (the original's ``is_bitfit``); ``full``: everything, as a lower-lr alternative.
    """
    if mode not in TRAINABLE:
        raise ValueError(f"fine-tuning mode must be one of {', '.join(TRAINABLE)}, got {mode!r}")
    keys = TRAINABLE[mode]
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(keys is None or any(k in name for k in keys))
        if p.requires_grad:
            trainable.append(p)
    return trainable


# -- EMA -------------------------------------------------------------------------------------------------------------
#: The original's EMA decay and the checkpoint step it samples from (``run.sh``).
EMA_DECAY, EMA_PAPER_STEPS = 0.9999, 12000


def ema_decay_for(steps: int) -> float:
    """Decay that leaves the starting weights the same share after ``steps`` as 0.9999 after 12k: 1 − 1.2/steps."""
    if steps < 2:
        raise ValueError(f"EMA needs at least 2 steps, got {steps}")
    return 1.0 - (1.0 - EMA_DECAY) * EMA_PAPER_STEPS / steps


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode deep copy to hold the EMA weights (tied modules and DiffFit hooks are copied as such)."""
    ema = copy.deepcopy(model).eval()
    return ema.requires_grad_(False)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model over all parameters (frozen ones included, as the original)."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("EMA and model have different parameter lists")
    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)


__all__ = [
    "DIT_SIZES",
    "DIT_XL_2_REPO",
    "EMA_DECAY",
    "TRAINABLE",
    "VAE_REPOS",
    "VAE_SCALE",
    "DiTSize",
    "FinetuneMode",
    "add_difffit_gammas",
    "build_dit",
    "conditioning_drift",
    "decode_latents",
    "dit_xl_2",
    "ema_copy",
    "ema_decay_for",
    "ema_update",
    "encode_latents",
    "load_dit",
    "load_vae",
    "mark_trainable",
    "pixel_unet",
    "random_vae",
    "sd_vae_random",
    "share_conditioning",
    "tiny_latent_dit",
    "tiny_vae",
]
