"""Building blocks of Minimax diffusion (Gu et al., CVPR 2024; spec ``minimax.md``), on top of ``diffusers``.

The method fine-tunes a class-conditional diffusion model with two extra "minimax" terms and then samples the
distilled set from it. These modules hold the pieces, each tested on its own (``tests/test_minimax_ops.py``); the
method plugin composes them:

* :mod:`.models`: the diffusers DiT (small pixel-space sizes, DiT-XL/2 for the latent path, a tiny random VAE + DiT
  for plumbing tests), the label embedder tied across blocks (spec §8.2.14), DiffFit γ factors and parameter
  selection (§3.2), EMA weights (§3.3), a UNet2DModel alternative, VAE encode/decode (§1).
* :mod:`.schedule`: the 1000-step linear-β schedule, the 50-step respaced ancestral sampler and DDIM as
  ``diffusers`` schedulers with the settings of spec §9.1, x̂₀ from ε̂ (§3.1 step 5), the hybrid MSE + VB loss (§1).
* :mod:`.minimax`: per-class FIFO memories and the representativeness / diversity terms (§3.1 step 6, §10.2).
* :mod:`.finetune`: one fine-tuning step's losses, in the original's order of random draws (§3.1).
* :mod:`.sampling`: classifier-free guidance with the DiT 3-of-4-channel quirk (§4), the sampling loop, and nested
  seeded IPC subsets of one generation (§4 [ddbench]).
* :mod:`.labels`: label dropout outside the model, the null class id, and the subset-local → ImageNet-1K label map
  (§2 table, §10.12).

``diffusers`` is the optional extra ``ddbench[diffusion]``. Nothing here imports it at module import time:
:func:`require_diffusers` imports it on first use and turns its absence into a one-line :class:`UserError`, so
``ddbench list`` and the rest of the suite work without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ddbench.errors import UserError

#: The setup.cfg extra that installs diffusers.
DIFFUSION_EXTRA = "ddbench[diffusion]"


def require_diffusers() -> ModuleType:
    """The ``diffusers`` module, or a :class:`UserError` naming the extra that installs it.

    Raises:
        UserError: diffusers is not installed (the message is one line the CLI prints as is).
    """
    try:
        return importlib.import_module("diffusers")
    except ImportError as exc:
        raise UserError(f"Minimax diffusion needs diffusers: pip install '{DIFFUSION_EXTRA}'") from exc


__all__ = ["DIFFUSION_EXTRA", "require_diffusers"]
