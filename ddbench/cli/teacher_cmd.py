"""``ddbench teacher``: train (or load, or import) a dataset's teacher and say where it is and how good it is."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  ddbench teacher --dataset digits --arch convnet --preset cpu
  ddbench teacher --dataset cifar10 --device cuda                     # ResNet-18, 200-epoch CIFAR recipe
  ddbench teacher --dataset tiny-imagenet --checkpoint resnet18_E100/ckpt.pth --data-root ~/data
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher",
        help="train, load or import a dataset's teacher (cached, verified, with its accuracy)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="dataset id (ddbench list datasets)")
    p.add_argument("--arch", default="", help="architecture (default: the dataset's default teacher)")
    p.add_argument("--recipe", default="default", help="teacher recipe name or .toml path (default: the dataset's)")
    p.add_argument("--preset", default="auto", help="recipe profile: paper | cpu | auto (paper on CUDA, cpu otherwise)")
    p.add_argument("--seed", type=int, default=0, help="training seed (part of the teacher id)")
    p.add_argument("--checkpoint", default=None, help="import this state_dict checkpoint instead of training")
    p.add_argument("--data-root", default=None, help="where datasets live (also $DDBENCH_DATA)")
    p.add_argument("--num-classes", type=int, default=None, help="only the first N canonical classes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--refresh", action="store_true", help="retrain even if a valid cached teacher exists")
    p.add_argument("--store", default=None, help="results database to record the teacher in")
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import device as parse_device
    from ddbench.cli.args import profile as parse_profile
    from ddbench.cli.args import writable_home
    from ddbench.cli.run_cmd import rich_progress
    from ddbench.data import load_dataset
    from ddbench.method import TeacherSpec
    from ddbench.pipeline import check_profile
    from ddbench.store import Store
    from ddbench.teachers import get_teacher, import_teacher

    writable_home()
    device = parse_device(args.device)
    profile = parse_profile(args.preset, device)
    check_profile(profile, None)
    dataset = load_dataset(args.dataset, args.data_root, args.num_classes)
    if args.checkpoint:
        arch = args.arch or dataset.spec.default_teacher
        teacher = import_teacher(dataset, arch, args.checkpoint, device=device)
    else:
        spec = TeacherSpec(arch=args.arch, recipe=args.recipe, seed=args.seed)
        with rich_progress() as progress:
            teacher = get_teacher(
                dataset, spec, profile=profile, device=device, progress=progress, refresh=args.refresh
            )
    Store(args.store).add_teacher(**teacher.record())

    recipe = teacher.recipe
    rows = [
        ("path", str(teacher.path)),
        ("arch", teacher.arch),
        ("recipe", f"{recipe.get('name')} v{recipe.get('version')} ({recipe.get('profile')} profile)"
         if recipe.get("version") is not None else str(recipe.get("name"))),
        ("classes", f"{dataset.num_classes} (order hash {teacher.class_hash})"),
    ]  # fmt: skip
    acc = teacher.accuracy
    for split in ("train", "val", "test"):
        if f"{split}_top1" in acc:
            rows.append((f"{split} accuracy", f"top-1 {acc[f'{split}_top1']:.2f}%  top-5 {acc[f'{split}_top5']:.2f}%"))
    rows.append(("sha256", teacher.sha256))
    # plain lines, never truncated, so the id and path can be copied from any terminal width
    console.print(f"teacher [bold green]{teacher.id}[/]", soft_wrap=True)
    for name, value in rows:
        console.print(f"  {name:<15} {value}", markup=False, highlight=False, soft_wrap=True)
    return 0
