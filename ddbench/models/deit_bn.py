"""DeiT-Tiny-BN: SRe2L's BatchNorm ViT, built from timm's VisionTransformer.

Provenance: timm ``VisionTransformer`` with DeiT-Tiny's shape (embed 192, depth 12, 3 heads, MLP ratio 4, class
token, ``qkv_bias``), i.e. timm's ``deit_tiny_patch16_224`` architecture, with two changes that make it the
"DeiT-Tiny-BN" of SRe2L (after Yao et al., "Leveraging Batch Normalization for Vision Transformers", 2021):

1. every LayerNorm (``norm1``/``norm2`` of each block and the final ``norm``) is a
   :class:`~ddbench.models._layers.TokenBatchNorm`, a BatchNorm over the flattened ``(B·N, C)`` tokens;
2. each MLP gets an extra TokenBatchNorm between its two linears, in timm's ``Mlp.norm`` slot
   (``scale_mlp_norm=True``: fc1 → GELU → BN → fc2). SRe2L's released code does not include the model, so the
   exact position of this BN relative to the GELU is our choice (documented, not verified against upstream).

Both are constructor arguments of timm's VisionTransformer; nothing is patched after construction. timm supplies
``forward_features`` (tokens ``[N, 1 + T, 192]`` after the final norm), ``forward_head`` (class token) and
``num_features`` (192).

Small inputs: the patch size follows :func:`~ddbench.models._stems.vit_patch_size`: 16 at 224 (14×14 tokens),
8 at 64 (8×8), 4 at 32 (8×8), 4 at 28 (7×7), 2 at 8 (4×4). Pass ``patch_size`` to override.
"""

from __future__ import annotations

import logging
from typing import Any

from timm.models.vision_transformer import VisionTransformer

from ddbench.models._layers import TokenBatchNorm
from ddbench.models._stems import vit_patch_size

logger = logging.getLogger(__name__)

DEIT_TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True}


def deit_tiny_bn(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, patch_size: int | None = None, **kwargs: Any
) -> VisionTransformer:
    """DeiT-Tiny with BatchNorm instead of LayerNorm and a BatchNorm inside every MLP (SRe2L's BN-ViT).

    Args:
        num_classes: classifier width.
        img_size: input size; fixes the position-embedding grid and, by default, the patch size.
        in_chans: input channels.
        patch_size: override the size rule (must divide ``img_size``).
        **kwargs: passed to timm's VisionTransformer (``drop_path_rate``, ...).
    """
    patch_size = patch_size or vit_patch_size(img_size)
    if img_size % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide img_size {img_size}")
    logger.debug(
        "deit_tiny_bn: img_size=%d → patch %d (%d tokens)", img_size, patch_size, (img_size // patch_size) ** 2
    )
    kwargs = {**DEIT_TINY, **kwargs}
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        norm_layer=TokenBatchNorm,
        scale_mlp_norm=True,
        **kwargs,
    )
