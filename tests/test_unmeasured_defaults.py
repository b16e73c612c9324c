"""GPU code that has never run on a GPU is not a default (issue "A readable core", item 3): it is
tested in the CUDA C emulator and compiled by nvcc, but only a GPU can say whether it is right
there and whether it pays, so each stays opt-in until `bash benchmarks/gpu_check.sh pending` has
measured it. When a GPU session flips one of these, it changes this test and says what it saw."""
from minisims.kernels import _conv2d_igemm, mlp_eval
from minisims import ops


def test_the_fused_mlp_training_kernels_are_opt_in():
    assert ops.FUSE_MLP_TRAIN is False  # kernels/mlp_train.py: emulator only so far
    assert ops.FUSE_MLP_EVAL is True    # kernels/mlp_eval.py "cupy": ran on an H200


def test_the_tiled_mlp_evaluation_is_opt_in():
    assert mlp_eval.AUTO_GPU == "cupy"


def test_igemms_parity_split_input_gradient_is_opt_in():
    assert _conv2d_igemm.PARITY_SPLIT is False
