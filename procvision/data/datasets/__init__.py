"""Real image datasets in their official on-disk formats (local paths only; see shared/DATA.md)."""

from procvision.data.datasets.base import (
    ArrayDataset,
    CorruptImageError,
    CorruptImageWarning,
    DatasetFormatError,
    FileDataset,
    RealDataset,
    SubsetDataset,
    collate_skip,
    open_image,
    seeded_subset,
)
from procvision.data.datasets.datamodule import KNNDataModule
from procvision.data.datasets.folders import CUB200, Flowers102, Food101, ImageFolder
from procvision.data.datasets.idx import FASHION_MNIST_ROOT, MNIST, FashionMNIST, read_idx
from procvision.data.datasets.medmnist import MEDMNIST_2D, MedMNIST, npz_array
from procvision.data.datasets.registry import DatasetURI, open_dataset, parse_dataset_uri
from procvision.data.datasets.transforms import EvalTransform, to_rgb

__all__ = [
    "CUB200", "FASHION_MNIST_ROOT", "MEDMNIST_2D", "MNIST", "ArrayDataset", "CorruptImageError", "CorruptImageWarning",
    "DatasetFormatError", "DatasetURI", "EvalTransform", "FashionMNIST", "FileDataset", "Flowers102",
    "Food101", "ImageFolder", "KNNDataModule", "MedMNIST", "RealDataset", "SubsetDataset",
    "collate_skip", "npz_array", "open_dataset", "open_image", "parse_dataset_uri", "read_idx",
    "seeded_subset", "to_rgb",
]  # fmt: skip
