"""The built-in dataset specs. Class orders here are canonical; loaders must produce exactly these."""

from __future__ import annotations

from ddbench.data.spec import DatasetSpec

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        id="digits",
        classes=tuple(str(i) for i in range(10)),
        img_size=8,
        channels=1,
        mean=(0.3053,),
        std=(0.3759,),
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.digits",
        how_to_get="Bundled with scikit-learn; nothing to download.",
        num_train=1258,
    ),
    DatasetSpec(
        id="mnist",
        classes=tuple(str(i) for i in range(10)),
        img_size=28,
        channels=1,
        mean=(0.1307,),
        std=(0.3081,),
        default_teacher="convnet",
        default_protocol="kd",
        loader="ddbench.data.idx",
        folder_names=("MNIST/raw", "MNIST", "mnist"),
        how_to_get="Run with --download, or place train-images-idx3-ubyte(.gz) and friends in <root>/MNIST/raw.",
        num_train=60000,
    ),
    DatasetSpec(
        id="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
        img_size=28,
        channels=1,
        mean=(0.2860,),
        std=(0.3530,),
        default_teacher="convnet",
        default_protocol="kd",
        loader="ddbench.data.idx",
        folder_names=("FashionMNIST/raw", "FashionMNIST", "fashion-mnist"),
        how_to_get="apt-get install dataset-fashion-mnist, run with --download, or pass --data-root.",
        num_train=60000,
        aliases=("fmnist",),
    ),
    DatasetSpec(
        id="cifar10",
        classes=CIFAR10_CLASSES,
        img_size=32,
        channels=3,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.cifar",
        folder_names=("cifar-10-batches-py", "cifar10", "CIFAR-10-images"),
        how_to_get="Run with --download (torchvision), or unzip the train/<class>/ test/<class>/ folders.",
        num_train=50000,
        aliases=("cifar-10",),
    ),
    DatasetSpec(
        id="cifar100",
        classes=None,  # filled from ddbench.data.cifar (fine label names in index order)
        img_size=32,
        channels=3,
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.cifar",
        folder_names=("cifar-100-python", "cifar100"),
        how_to_get="Run with --download (torchvision), or place cifar-100-python/ under --data-root.",
        num_train=50000,
        aliases=("cifar-100",),
    ),
    DatasetSpec(
        id="tiny-imagenet",
        classes=None,  # sorted wnids; filled by ddbench.data.tiny_imagenet
        img_size=64,
        channels=3,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2302, 0.2265, 0.2262),
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.tiny_imagenet",
        folder_names=("tiny-imagenet-200",),
        how_to_get="Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it under --data-root.",
        num_train=100000,
        aliases=("tinyimagenet", "tiny"),
    ),
    DatasetSpec(
        id="imagenet-1k",
        classes=None,  # sorted wnids of the class folders
        img_size=224,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.imagenet",
        folder_names=("imagenet", "ILSVRC2012", "imagenet-1k"),
        how_to_get="Get ILSVRC2012 from image-net.org and arrange train/<wnid>/ and val/<wnid>/ folders.",
        in_memory=False,
        num_train=1281167,
        aliases=("imagenet", "imagenet1k"),
    ),
)
