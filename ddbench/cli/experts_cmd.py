"""``ddbench experts``: train (or reuse) MTT's expert trajectories, one cached artifact per expert."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  ddbench experts --dataset digits --num 2 --epochs 4 --width 32
  ddbench experts --dataset cifar10 --num 100 --epochs 50 --zca --device cuda     # MTT's CIFAR-10 buffer
  ddbench experts --dataset tiny-imagenet --depth 4 --num 100 --epochs 50 --export buffers/Tiny/ConvNetD4

Expert k is the same artifact whoever asks for it (this command or `ddbench run --method mtt` with the same
model, ZCA setting, recipe and E), so a run that needs 10 experts reuses the 5 made earlier, and a killed command
resumes at the next unfinished expert.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experts",
        help="train or reuse MTT expert trajectories (one verified artifact per expert)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="dataset id (ddbench list datasets)")
    p.add_argument("--model", default="convnet", help="architecture (default convnet, instance norm)")
    p.add_argument("--width", type=int, default=None, help="ConvNet width (default 128)")
    p.add_argument("--depth", type=int, default=None, help="ConvNet depth (default: from the image size; 4 = D4)")
    p.add_argument("--num", type=int, default=10, help="number of experts (exactly this many are stored)")
    p.add_argument("--epochs", type=int, default=None, help="E, epochs per expert (default: the recipe's)")
    p.add_argument("--zca", action="store_true", help="train on ZCA-whitened images (kornia semantics)")
    p.add_argument("--zca-eps", type=float, default=0.1, help="ZCA epsilon (default 0.1, MTT's)")
    p.add_argument("--recipe", default="mtt-expert", help="expert recipe name or .toml path")
    p.add_argument("--preset", default="auto", help="recipe profile: paper | cpu | auto (paper on CUDA, cpu otherwise)")
    p.add_argument("--export", default=None, metavar="DIR", help="also write official replay_buffer_{n}.pt files")
    p.add_argument("--data-root", default=None, help="where datasets live (also $DDBENCH_DATA)")
    p.add_argument("--num-classes", type=int, default=None, help="only the first N canonical classes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import device as parse_device
    from ddbench.cli.args import positive, writable_home
    from ddbench.cli.args import profile as parse_profile
    from ddbench.cli.run_cmd import rich_progress
    from ddbench.data import load_dataset
    from ddbench.experts import ExpertSpec, cached_experts, get_experts
    from ddbench.pipeline import check_profile

    writable_home()
    positive(args.num, "--num")
    if args.epochs is not None:
        positive(args.epochs, "--epochs")
    device = parse_device(args.device)
    profile = parse_profile(args.preset, device)
    check_profile(profile, None)
    dataset = load_dataset(args.dataset, args.data_root, args.num_classes)
    spec = ExpertSpec(arch=args.model, model_kwargs={"width": args.width, "depth": args.depth},
                      recipe=args.recipe, train_epochs=args.epochs, zca=args.zca, zca_eps=args.zca_eps)  # fmt: skip
    before = set(cached_experts(dataset, spec, args.num, profile=profile))
    with rich_progress() as progress:
        store = get_experts(dataset, spec, args.num, profile=profile, device=device, progress=progress)
    space = f"ZCA eps {args.zca_eps:g}" if args.zca else "no ZCA"
    console.print(
        f"[bold]{len(store)}[/] experts of {args.model} on {dataset.id} ({store.num_epochs} epochs, "
        f"{space}): {len(before)} reused, "
        f"{len(store) - len(before)} trained"
    )
    for k, art in enumerate(store.artifacts):
        meta = art.meta
        console.print(
            f"  {k:>3} {'reused ' if k in before else 'trained'} top-1 {meta['test_top1_init']:.1f}% → "
            f"{meta['test_top1']:.1f}%  {art.path}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    if args.export:
        paths = store.export(args.export)
        console.print(f"exported {len(store)} experts to {len(paths)} replay-buffer file(s) in {args.export}")
    return 0
