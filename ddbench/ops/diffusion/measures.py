"""How diverse and how representative a generation is: the measures behind spec ``minimax.md`` §9.2 (a) and (b).

Acceptance of Minimax is relative (the paper's numbers need the ImageNet DiT): λ_d > 0 should lower the similarity
between the generated images of a class, λ_r > 0 should raise their similarity to the real images of the class.
Both are cosines of flattened images in [−1, 1], the space the minimax terms compare x̂₀ in on the pixel path:

* **within-class cosine**: per class, the mean off-diagonal cosine between its generated images; then the mean
  over classes (each class counts once, whatever its size);
* **nearest-real cosine**: per generated image, the largest cosine to a real train image of its class; the mean
  over classes of the per-class means;
* **mean-real cosine** (a diagnostic beside (b)): per generated image, the mean cosine to every real train image of
  its class, averaged the same way;
* **farthest-real cosine** (a diagnostic beside (b)): per generated image, the *smallest* cosine to a real train
  image of its class, averaged the same way. L_r's hard min (1 − min cos over predictions × real memory) raises
  exactly this worst case, which need not raise the nearest-real cosine.

Raw [−1, 1] cosines are dominated by the brightness all images share, so the within-class measure can also be
taken after subtracting a centre (the mean real train image): the *centred* cosine. One definition serves the
acceptance test and ``scripts/minimax_diagnose.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ddbench.ops.diffusion.minimax import cosine_matrix

if TYPE_CHECKING:
    from ddbench.data import Dataset


def signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` as float rows ``[N, C·H·W]`` in [−1, 1] (the diffusion's pixel space)."""
    return images.float().flatten(1) / 127.5 - 1.0


def mean_off_diagonal_cosine(x: torch.Tensor) -> float:
    """Mean cosine between distinct rows of ``x`` ``[n, d]`` (n ≥ 2)."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 rows for a pairwise cosine, got {n}")
    sim = cosine_matrix(x, x)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def within_class_cosine(images: torch.Tensor, labels: torch.Tensor, centre: torch.Tensor | None = None) -> float:
    """Mean over classes of the mean pairwise cosine between a class's images (centred on ``centre`` if given)."""
    values = []
    for c in labels.unique():
        x = signed(images[labels == c])
        values.append(mean_off_diagonal_cosine(x if centre is None else x - centre.flatten()))
    return sum(values) / len(values)


def real_cosines(images: torch.Tensor, labels: torch.Tensor, dataset: Dataset) -> dict[str, float]:
    """Each generated image against the real train images of its own class, in one pass over them.

    Returns ``nearest`` (max cosine), ``mean`` and ``farthest`` (min cosine), each the mean over classes of the
    mean over a class's images. ``farthest`` is what L_r's hard min acts on: 1 − min cos over (prediction, real
    memory) pairs pulls the worst pair together, i.e. a prediction toward the real sample it is farthest from.
    """
    per_class: dict[str, list[float]] = {"nearest": [], "mean": [], "farthest": []}
    for c in labels.unique():
        real = signed(dataset.train.load(dataset.class_indices(int(c))))
        sim = cosine_matrix(signed(images[labels == c]), real)
        per_class["nearest"].append(float(sim.max(dim=1).values.mean()))
        per_class["mean"].append(float(sim.mean()))
        per_class["farthest"].append(float(sim.min(dim=1).values.mean()))
    return {k: sum(v) / len(v) for k, v in per_class.items()}


def real_centre(dataset: Dataset) -> torch.Tensor:
    """The mean real train image in [−1, 1], flattened: the centre of the centred cosine."""
    return signed(dataset.train.load(torch.arange(len(dataset.train)))).mean(0)


def generation_measures(
    images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, centre: torch.Tensor | None = None
) -> dict[str, float]:
    """The §9.2 measures of one generation: ``within_cos``, ``within_cos_centred``, ``nearest_real_cos``,
    ``mean_real_cos`` and ``farthest_real_cos``."""
    centre = real_centre(dataset) if centre is None else centre
    real = real_cosines(images, labels, dataset)
    return {
        "within_cos": within_class_cosine(images, labels),
        "within_cos_centred": within_class_cosine(images, labels, centre),
        "nearest_real_cos": real["nearest"],
        "mean_real_cos": real["mean"],
        "farthest_real_cos": real["farthest"],
    }


__all__ = [
    "generation_measures",
    "mean_off_diagonal_cosine",
    "real_centre",
    "real_cosines",
    "signed",
    "within_class_cosine",
]
