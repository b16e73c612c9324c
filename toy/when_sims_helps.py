"""When does SIMS help? Base budget x aux budget x w at generation 1 (issue 11).

The command only: presets, experiment, tables and plots are in minisims/figures/when_sims_helps.py.
    python toy/when_sims_helps.py --help
"""
from minisims.figures.when_sims_helps import entry

if __name__ == "__main__":
    entry()
