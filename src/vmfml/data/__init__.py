"""Image data: sources (`ImageDataset`s), train/test splits, and transforms to model inputs."""

from vmfml.data.animal_mnist import animal_mnist
from vmfml.data.combined import combined_30, combined_30_retrieval_split, concat_sources
from vmfml.data.dataset import ImageDataset, TensorImageDataset
from vmfml.data.fashion_mnist import download_fashion_mnist, fashion_mnist
from vmfml.data.idx import read_idx
from vmfml.data.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, decode_image, image_folder
from vmfml.data.mnist_digits import mnist_digits
from vmfml.data.registry import list_datasets, load_dataset, load_open_set_splits, load_splits
from vmfml.data.splits import (
    class_disjoint_split,
    per_source_class_split,
    select_classes,
    stratified_split,
)
from vmfml.data.transforms import (
    AUGMENTATIONS,
    ImageTransform,
    Preprocessing,
    TransformedDataset,
    make_transform,
    prepare_batch,
)

__all__ = [
    "AUGMENTATIONS",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageTransform",
    "Preprocessing",
    "TensorImageDataset",
    "TransformedDataset",
    "animal_mnist",
    "class_disjoint_split",
    "combined_30",
    "combined_30_retrieval_split",
    "concat_sources",
    "decode_image",
    "download_fashion_mnist",
    "fashion_mnist",
    "image_folder",
    "list_datasets",
    "load_dataset",
    "load_open_set_splits",
    "load_splits",
    "make_transform",
    "mnist_digits",
    "per_source_class_split",
    "prepare_batch",
    "read_idx",
    "select_classes",
    "stratified_split",
]
