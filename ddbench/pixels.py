"""Pixel spaces: what the numbers in a distilled set's image tensor mean, as objects.

A distilled set stores images in one pixel space. The space knows the three things every consumer needs:

* :meth:`PixelSpace.start` / :meth:`PixelSpace.finish`: stored images → the float working tensor augmentations
  run on → model input. ``uint8`` images are augmented in [0, 1] (zero padding is black, as torchvision on PIL
  images) and normalised at the end; ``normalized`` and ``zca`` images already are model inputs.
* :meth:`PixelSpace.test_input`: how the *real* test images ([0, 1] floats) become model inputs the same way, so a
  ZCA set is scored on a test set whitened by the same fitted transform (MTT issue #11: inverse-whitening the set
  and testing on normalised data is not equivalent).
* :meth:`PixelSpace.to_unit`: back to displayable [0, 1] pixels (``ddbench show``); ZCA is inverted exactly.

A space's state (ZCA's mean and matrices) travels inside the distilled-set artifact (:meth:`state`,
:meth:`params`), so evaluation never refits anything. New spaces register in :data:`PIXEL_SPACES` from any module
(a test file can add one); nothing in the harness switches on space names.

ZCA (spec mtt.md §2) follows kornia's ``ZCAWhitening(eps, compute_inv=True)`` as MTT uses it: images in [0, 1]
(no mean/std normalisation) are flattened, centred by the train mean μ, Σ is the *unbiased* covariance,
Σ = UΛUᵀ, W = U·diag(1/√(Λ+ε))·Uᵀ and the output is (x − μ)W; the inverse is U·diag(√(Λ+ε))·Uᵀ plus μ. ε is
absolute (0.1 in MTT), with no per-image standardisation. It is written here (a symmetric eigendecomposition in
float64, accumulated in chunks so CIFAR's 50k × 3072 never sits in memory twice) and tested against kornia; the
whitened train data has spectrum Λ/(Λ+ε). Fits are cached per dataset fingerprint and ε through the artifact
cache, because a Tiny-ImageNet fit (12288² covariance) takes minutes on a CPU.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ddbench.registry import Registry

if TYPE_CHECKING:
    from ddbench.data.dataset import Dataset

logger = logging.getLogger(__name__)


def _vec(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


class PixelSpace(abc.ABC):
    """Base class of pixel spaces; subclasses set ``name`` and implement the abstract methods.

    Args:
        mean, std: the dataset's per-channel normalisation (every space carries them: uint8 and normalized spaces
            use them, ZCA records them for provenance).
        state: tensors the space needs (ZCA: ``mean``, ``W``, ``W_inv``).
        params: JSON-able parameters (ZCA: ``eps``).
    """

    name: ClassVar[str]
    #: stored images are already model inputs (augmentations then run in model space, padding is the mean)
    model_space: ClassVar[bool] = True
    #: dtype stored images must have (None: any float dtype)
    dtype: ClassVar[torch.dtype | None] = None
    #: :meth:`to_pixels` needs the true dataset mean/std (``ddbench show`` stretches instead when they are unknown)
    inverse_needs_stats: ClassVar[bool] = False

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        state: Mapping[str, torch.Tensor] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._state = dict(state or {})
        self._params = dict(params or {})

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors saved inside the distilled-set artifact."""
        return dict(self._state)

    def params(self) -> dict[str, Any]:
        """JSON-able parameters saved in the artifact manifest."""
        return dict(self._params)

    @classmethod
    def check(cls, images: torch.Tensor) -> None:
        """Raise ValueError when ``images`` cannot be in this space."""
        if cls.dtype is not None and images.dtype != cls.dtype:
            raise ValueError(f"pixel_space {cls.name!r} needs {cls.dtype} images, got {images.dtype}")
        if cls.dtype is None and not images.is_floating_point():
            raise ValueError(f"pixel_space {cls.name!r} needs float images, got {images.dtype}")

    def start(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images → the float working tensor augmentations run on."""
        return images.float()

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Working tensor → model input (identity for spaces whose stored images are model inputs)."""
        return x

    @abc.abstractmethod
    def test_input(self, x01: torch.Tensor) -> torch.Tensor:
        """Real images in [0, 1] (float ``[N, C, H, W]``) → model input, as the stored images are."""

    @abc.abstractmethod
    def from_unit(self, x01: torch.Tensor) -> torch.Tensor:
        """Real images in [0, 1] → this space's stored representation (methods' real-image init)."""

    @abc.abstractmethod
    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images → pixels on the [0, 1] scale, exactly (not clamped; the inverse of :meth:`from_unit`)."""

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images → [0, 1] pixels for display (clamped)."""
        return self.to_pixels(images).clamp(0.0, 1.0)


PIXEL_SPACES: Registry[type[PixelSpace]] = Registry("pixel space")


def register_pixel_space(cls: type[PixelSpace]) -> type[PixelSpace]:
    """Class decorator: make ``cls`` available under ``cls.name`` (artifacts name their space)."""
    PIXEL_SPACES.register(cls.name, cls, origin=cls.__module__)
    return cls


def build_pixel_space(
    name: str,
    mean: Sequence[float],
    std: Sequence[float],
    state: Mapping[str, torch.Tensor] | None = None,
    params: Mapping[str, Any] | None = None,
) -> PixelSpace:
    """The registered space ``name`` with its state (as an artifact records it)."""
    return PIXEL_SPACES.get(name)(mean, std, state, params)


@register_pixel_space
class UInt8Space(PixelSpace):
    """uint8 pixels (real images, SRe2L/DWA/EDC artifacts): augmented in [0, 1], normalised with mean/std last."""

    name = "uint8"
    model_space = False
    dtype = torch.uint8

    def start(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return (x - _vec(self.mean, x)) / _vec(self.std, x)

    def test_input(self, x01: torch.Tensor) -> torch.Tensor:
        return self.finish(x01)

    def from_unit(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01.clamp(0, 1) * 255.0).round().to(torch.uint8)

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0


@register_pixel_space
class NormalizedSpace(PixelSpace):
    """Float images already normalised with the dataset mean/std ((x − m)/s), e.g. MTT without ZCA."""

    name = "normalized"
    inverse_needs_stats = True

    def test_input(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - _vec(self.mean, x01)) / _vec(self.std, x01)

    def from_unit(self, x01: torch.Tensor) -> torch.Tensor:
        return self.test_input(x01.float())

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        return x * _vec(self.std, x) + _vec(self.mean, x)


@register_pixel_space
class ZCASpace(PixelSpace):
    """ZCA-whitened images (MTT); state ``mean`` [D], ``W`` [D, D], ``W_inv`` [D, D]; params ``eps``."""

    name = "zca"

    def _apply(self, x: torch.Tensor, matrix: str, add_mean: bool) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(shape[0], -1).to(self._state[matrix].dtype)
        mean = self._state["mean"].to(flat.device)
        w = self._state[matrix].to(flat.device)
        out = flat @ w + mean if add_mean else (flat - mean) @ w
        return out.to(x.dtype if x.is_floating_point() else torch.float32).reshape(shape)

    def test_input(self, x01: torch.Tensor) -> torch.Tensor:
        return self._apply(x01.float(), "W", add_mean=False)

    def from_unit(self, x01: torch.Tensor) -> torch.Tensor:
        return self.test_input(x01)

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Exact inverse of the whitening (unclamped [0, 1]-scale pixels)."""
        return self._apply(images.float(), "W_inv", add_mean=True)

    @classmethod
    def fit(
        cls,
        images: torch.Tensor,
        eps: float = 0.1,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        chunk: int = 4096,
    ) -> ZCASpace:
        """Fit on real images (uint8 or [0, 1] float ``[N, C, H, W]``), kornia ``ZCAWhitening`` semantics.

        The covariance is accumulated in float64 over chunks of ``chunk`` images and decomposed with
        ``torch.linalg.eigh`` (Σ is symmetric PSD, so its SVD's U and Λ are its eigenvectors and eigenvalues).
        The matrices are stored in float32, as kornia fits them.
        """
        if eps <= 0:
            raise ValueError(f"ZCA eps must be > 0, got {eps}")
        n = images.shape[0]
        if n < 2:
            raise ValueError("ZCA needs at least 2 images")
        dim = images[0].numel()

        def rows(lo: int) -> torch.Tensor:
            x = images[lo : lo + chunk]
            x = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
            return x.reshape(x.shape[0], -1)

        total = torch.zeros(dim, dtype=torch.float64)
        for lo in range(0, n, chunk):
            total += rows(lo).sum(0)
        mu = total / n
        cov = torch.zeros(dim, dim, dtype=torch.float64)
        for lo in range(0, n, chunk):
            centred = rows(lo) - mu
            cov.addmm_(centred.T, centred)
        cov /= n - 1  # unbiased, as kornia's default
        lam, u = torch.linalg.eigh(cov)
        lam = lam.clamp_min(0.0)
        w = (u * (lam + eps).rsqrt()) @ u.T
        w_inv = (u * (lam + eps).sqrt()) @ u.T
        state = {"mean": mu.float(), "W": w.float(), "W_inv": w_inv.float(), "eigenvalues": lam.float()}
        return cls(mean, std, state, {"eps": float(eps), "fit_images": int(n)})


def fit_zca(dataset: Dataset, eps: float = 0.1) -> ZCASpace:
    """The dataset's ZCA space fitted on its whole real train split, cached per data identity and ε."""
    from ddbench.artifacts import CACHE
    from ddbench.data.identity import dataset_key

    key = {"dataset": dataset_key(dataset), "eps": float(eps), "semantics": "kornia-ZCAWhitening-unbiased"}

    def compute() -> dict[str, torch.Tensor]:
        logger.info("fitting ZCA (eps %g) on %d %s train images", eps, len(dataset.train), dataset.id)
        return ZCASpace.fit(dataset.train.all(), eps).state()

    state, _ = CACHE.get_or_build_tensors("zca", key, compute, name=dataset.id)
    return ZCASpace(dataset.spec.mean, dataset.spec.std, state, {"eps": float(eps), "fit_images": len(dataset.train)})


__all__ = [
    "PIXEL_SPACES",
    "NormalizedSpace",
    "PixelSpace",
    "UInt8Space",
    "ZCASpace",
    "build_pixel_space",
    "fit_zca",
    "register_pixel_space",
]
