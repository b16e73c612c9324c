"""Data. Import each from its module:

    toy.py          the paper's 2D Gaussian p_r (GAUSSIAN_MEAN, GAUSSIAN_COV, sample_gaussian)
    mixture.py      the two-group mixture of Section 4.3 (sample_mixture, classify, select_mix)
    images.py       ImageSet, the model's pixel scale, PNG folders and npz (DataError)
    cifar10.py      load_images, the one entry for image data; the user's CIFAR-10 copy
    safe_pickle.py  the restricted unpickler CIFAR-10's batches are read with

This file imports nothing, so that the 2D toy never loads the image readers.
"""
