"""Figure 4 (Sec. 4.2.1): self-improvement and the synthetic augmentation loop.

The command only: presets, experiment, table and plot are in minisims/figures/figure4.py.
    python toy/figure4.py --help
"""
if __name__ == "__main__":
    from minisims.cli_util import during_startup
    during_startup()  # Ctrl-C while the imports below load: one line, exit 130

    from minisims.figures.figure4 import entry
    entry()
