"""Data: the paper's 2D toy distributions (CIFAR-10 comes with the image pipeline)."""
from .mixture import classify, sample_mixture, select_mix
from .toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian

__all__ = ["GAUSSIAN_MEAN", "GAUSSIAN_COV", "sample_gaussian", "sample_mixture", "classify", "select_mix"]
