"""Data: the paper's 2D toy distributions, and images (CIFAR-10, PNG folders, npz).

Each name is imported from its module on first use, so that a program that needs a few of
them (the 2D toy: the MLP, not the UNet) loads only those.
"""
from ..lazy import lazy_names

_WHERE = {  # public name -> the module that defines it
    "GAUSSIAN_MEAN": "toy", "GAUSSIAN_COV": "toy", "sample_gaussian": "toy",
    "sample_mixture": "mixture", "classify": "mixture", "select_mix": "mixture",
    "DataError": "images", "ImageSet": "images", "to_model": "images", "to_uint8": "images",
    "load_images": "cifar10", "OFFICIAL_MD5": "cifar10",
}
__all__ = list(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
