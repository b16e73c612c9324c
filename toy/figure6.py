"""Figure 6 (Sec. 4.3): SIMS shifts a model's group mix toward a target.

The command only: presets, experiment, table and plot are in minisims/figures/figure6.py.
    python toy/figure6.py --help
"""
from minisims.figures.figure6 import entry

if __name__ == "__main__":
    entry()
