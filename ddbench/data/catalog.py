"""The built-in dataset specs. Class orders here are canonical; loaders must produce exactly these.

Class lists are written out (not read from the data) so a dataset's class-order hash is known before any file is
found, and a teacher trained elsewhere can be checked against it. ImageNet-1K is the exception: its classes are the
sorted wnid folders on disk, which is the standard index order.
"""

from __future__ import annotations

from dataclasses import replace

from ddbench.data.spec import DatasetSpec

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# CIFAR-100 fine label names in label-index order (``fine_label_names`` of the release's ``meta``).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
# Tiny-ImageNet-200 wnids, **sorted** (torchvision ImageFolder order), not wnids.txt order; see tiny_imagenet.py.
TINY_IMAGENET_WNIDS = (
    "n01443537", "n01629819", "n01641577", "n01644900", "n01698640", "n01742172", "n01768244", "n01770393",
    "n01774384", "n01774750", "n01784675", "n01855672", "n01882714", "n01910747", "n01917289", "n01944390",
    "n01945685", "n01950731", "n01983481", "n01984695", "n02002724", "n02056570", "n02058221", "n02074367",
    "n02085620", "n02094433", "n02099601", "n02099712", "n02106662", "n02113799", "n02123045", "n02123394",
    "n02124075", "n02125311", "n02129165", "n02132136", "n02165456", "n02190166", "n02206856", "n02226429",
    "n02231487", "n02233338", "n02236044", "n02268443", "n02279972", "n02281406", "n02321529", "n02364673",
    "n02395406", "n02403003", "n02410509", "n02415577", "n02423022", "n02437312", "n02480495", "n02481823",
    "n02486410", "n02504458", "n02509815", "n02666196", "n02669723", "n02699494", "n02730930", "n02769748",
    "n02788148", "n02791270", "n02793495", "n02795169", "n02802426", "n02808440", "n02814533", "n02814860",
    "n02815834", "n02823428", "n02837789", "n02841315", "n02843684", "n02883205", "n02892201", "n02906734",
    "n02909870", "n02917067", "n02927161", "n02948072", "n02950826", "n02963159", "n02977058", "n02988304",
    "n02999410", "n03014705", "n03026506", "n03042490", "n03085013", "n03089624", "n03100240", "n03126707",
    "n03160309", "n03179701", "n03201208", "n03250847", "n03255030", "n03355925", "n03388043", "n03393912",
    "n03400231", "n03404251", "n03424325", "n03444034", "n03447447", "n03544143", "n03584254", "n03599486",
    "n03617480", "n03637318", "n03649909", "n03662601", "n03670208", "n03706229", "n03733131", "n03763968",
    "n03770439", "n03796401", "n03804744", "n03814639", "n03837869", "n03838899", "n03854065", "n03891332",
    "n03902125", "n03930313", "n03937543", "n03970156", "n03976657", "n03977966", "n03980874", "n03983396",
    "n03992509", "n04008634", "n04023962", "n04067472", "n04070727", "n04074963", "n04099969", "n04118538",
    "n04133789", "n04146614", "n04149813", "n04179913", "n04251144", "n04254777", "n04259630", "n04265275",
    "n04275548", "n04285008", "n04311004", "n04328186", "n04356056", "n04366367", "n04371430", "n04376876",
    "n04398044", "n04399382", "n04417672", "n04456115", "n04465501", "n04486054", "n04487081", "n04501370",
    "n04507155", "n04532106", "n04532670", "n04540053", "n04560804", "n04562935", "n04596742", "n04597913",
    "n06596364", "n07579787", "n07583066", "n07614500", "n07615774", "n07695742", "n07711569", "n07715103",
    "n07720875", "n07734744", "n07747607", "n07749582", "n07753592", "n07768694", "n07871810", "n07873807",
    "n07875152", "n07920052", "n09193705", "n09246464", "n09256479", "n09332890", "n09428293", "n12267677",
)  # fmt: skip
# ImageNet 10-class subsets, local label k = k-th wnid as listed by the Minimax/IDC class files (misc/class_woof.txt,
# the ImageNette list, the first 10 lines of IDC's class100.txt). This listed order, not sorted wnids, is the
# canonical order, so labels match those codebases' memories and stored soft labels.
IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
IMAGEWOOF_WNIDS = (
    "n02096294", "n02093754", "n02111889", "n02088364", "n02086240",
    "n02089973", "n02087394", "n02115641", "n02099601", "n02105641",
)  # fmt: skip
IMAGEIDC_WNIDS = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406",
    "n02091831", "n04517823", "n04589890", "n03062245", "n01773797",
)  # fmt: skip

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet_subset(id_: str, wnids: tuple[str, ...], release_dirs: tuple[str, ...]) -> DatasetSpec:
    """A 10-class ImageNet subset, read from a full ImageNet-1K tree or from the subset's own release folder.

    224 px. Test images go through torchvision's ``Resize(224)`` + ``CenterCrop(224)``: the test transform of
    IDC's and Minimax's code (``transform_imagenet(size=224)`` in their ``data.py``; ``--size`` defaults to 224), under
    which the subsets' published numbers were measured. ImageNet-1K's ``Resize(256)`` is what that code applies when
    ``--size`` is unset, i.e. to full ImageNet; a subset spec with ``test_resize=256`` gives it. In memory (about 2 GB
    of uint8 for ~13k train images, built once in parallel and then loaded from the tensor cache): streaming would
    decode every full-size JPEG again in every epoch, which dominates teacher training and evaluation on 10 classes.
    ImageNet folders are probed before release folders because the papers use ImageNet's own train/val images (the
    fast.ai releases hold fewer); ``num_train`` and ``num_test`` are 0 because they depend on which of the two is
    found.
    """
    release = f"fast.ai's {release_dirs[0]} release or " if id_ != "imageidc" else ""
    return DatasetSpec(
        id=id_,
        classes=wnids,
        img_size=224,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.imagenet",
        folder_names=("imagenet", "ILSVRC2012", "imagenet-1k", *release_dirs),
        how_to_get=f"Point --data-root at {release}an ImageNet-1K folder with train/<wnid>/ and val/<wnid>/.",
        in_memory=True,
        num_train=0,
        num_test=0,
        test_resize=224,
    )


def _subset_128(id_: str, wnids: tuple[str, ...], release_dirs: tuple[str, ...]) -> DatasetSpec:
    """MTT's 128-px version of an ImageNet subset (``<id>-128``, spec mtt §2): both splits squashed to 128×128.

    The official ``get_dataset`` hard-codes the size and resizes to the pair (128, 128), which ignores the aspect
    ratio, so the following ``CenterCrop(128)`` does nothing; train and test get the same geometry. Antialiased
    (PIL), which the official tensor ``Resize`` does by default only in recent torchvision.
    """
    base = _imagenet_subset(id_, wnids, release_dirs)
    return replace(base, id=f"{id_}-128", img_size=128, test_resize=0, squash=True, aliases=())


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        id="digits",
        classes=tuple(str(i) for i in range(10)),
        img_size=8,
        channels=1,
        mean=(0.3053,),
        std=(0.3759,),
        default_teacher="convnet_bn",
        default_protocol="kd",
        loader="ddbench.data.digits",
        how_to_get="Bundled with scikit-learn; nothing to download.",
        num_train=1258,
        num_test=539,  # the seeded 70/30 split of digits.py
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
        num_test=10000,
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
        num_test=10000,
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
        num_test=10000,
        aliases=("cifar-10",),
    ),
    DatasetSpec(
        id="cifar100",
        classes=CIFAR100_CLASSES,
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
        num_test=10000,
        aliases=("cifar-100",),
    ),
    DatasetSpec(
        id="tiny-imagenet",
        classes=TINY_IMAGENET_WNIDS,
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
        num_test=10000,  # val: the release's test split has no labels
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
        num_test=50000,
        test_resize=256,  # Resize(256) + CenterCrop(224): SRe2L/DWA code and torchvision's reference
        aliases=("imagenet", "imagenet1k"),
    ),
    _imagenet_subset("imagenette", IMAGENETTE_WNIDS, ("imagenette2", "imagenette2-320", "imagenette")),
    _imagenet_subset("imagewoof", IMAGEWOOF_WNIDS, ("imagewoof2", "imagewoof2-320", "imagewoof")),
    _imagenet_subset("imageidc", IMAGEIDC_WNIDS, ("imageidc",)),
    _subset_128("imagenette", IMAGENETTE_WNIDS, ("imagenette2", "imagenette2-320", "imagenette")),
    _subset_128("imagewoof", IMAGEWOOF_WNIDS, ("imagewoof2", "imagewoof2-320", "imagewoof")),
)
