"""Data: the paper's 2D toy distributions, and images (CIFAR-10, PNG folders, npz)."""
from .cifar10 import OFFICIAL_MD5, load_images
from .images import DataError, ImageSet, to_model, to_uint8
from .mixture import classify, sample_mixture, select_mix
from .toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian

__all__ = ["GAUSSIAN_MEAN", "GAUSSIAN_COV", "sample_gaussian", "sample_mixture", "classify", "select_mix",
           "DataError", "ImageSet", "load_images", "OFFICIAL_MD5", "to_model", "to_uint8"]
