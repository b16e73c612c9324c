"""Autoguidance's bad model beside SIMS's aux at generation 1.

The command only: presets, experiment, table and plot are in minisims/figures/autoguidance.py.
    python toy/autoguidance.py --help
"""
from minisims.figures.autoguidance import entry

if __name__ == "__main__":
    entry()
