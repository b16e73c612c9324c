"""minisims: SIMS (self-improving diffusion models with synthetic data) from scratch in NumPy.

``minisims.__version__`` is the installed package's version. It is looked up on first use, so
that ``python -m minisims.toy`` reaches its Ctrl-C handler before any import that takes time.
"""


def __getattr__(name):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("minisims")
        except PackageNotFoundError:  # a checkout on sys.path that pip never installed
            return "0+unknown"
    raise AttributeError(f"module 'minisims' has no attribute {name!r}")
