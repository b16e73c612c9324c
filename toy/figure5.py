"""Figure 5 (Sec. 4.2.2): training on real data polluted with synthetic data.

The command only: presets, experiment, table and plot are in minisims/figures/figure5.py.
    python toy/figure5.py --help
"""
if __name__ == "__main__":
    from minisims.cli_util import during_startup
    during_startup()  # Ctrl-C while the imports below load: one line, exit 130

    from minisims.figures.figure5 import entry
    entry()
