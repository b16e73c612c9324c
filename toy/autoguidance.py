"""Autoguidance's bad model beside SIMS's aux at generation 1.

The command only: presets, experiment, table and plot are in minisims/figures/autoguidance.py.
    python toy/autoguidance.py --help
"""
if __name__ == "__main__":
    from minisims.cli_util import during_startup
    during_startup()  # Ctrl-C while the imports below load: one line, exit 130

    from minisims.figures.autoguidance import entry
    entry()
