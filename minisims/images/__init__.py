"""SIMS on images (paper Section 4.1, Figure 3). Import each from its module:

    presets.py     the presets (PRESETS, ImagePreset): tiny, cpu, gpu, paper
    pipeline.py    Algorithm 1's steps with files between them
    provenance.py  what each file records of how it was made
    study.py       the experiment repeated over base budgets and training seeds
    cli.py         ``python -m minisims.images`` and its subcommands

This file imports nothing, so that ``python -m minisims.images`` reaches its Ctrl-C handler
(images/__main__.py) before any import that takes time.
"""
