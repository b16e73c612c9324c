"""Figure 6 (Sec. 4.3): SIMS shifts a model's group mix toward a target.

The command only: presets, experiment, table and plot are in minisims/figures/figure6.py.
    python toy/figure6.py --help
"""
if __name__ == "__main__":
    from minisims.cli_util import during_startup
    during_startup()  # Ctrl-C while the imports below load: one line, exit 130

    from minisims.figures.figure6 import entry
    entry()
