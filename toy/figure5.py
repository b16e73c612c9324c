"""Figure 5 (Sec. 4.2.2): training on real data polluted with synthetic data.

The command only: presets, experiment, table and plot are in minisims/figures/figure5.py.
    python toy/figure5.py --help
"""
from minisims.figures.figure5 import entry

if __name__ == "__main__":
    entry()
