"""The paper's 2D figures as importable modules; ``toy/*.py`` are thin commands that call them.

    common.py        ToySizes (the world and budget every preset shares), preset -> config,
                     atomic output writers, generation 1 over run chunks
    sweep_folder.py  a sweep's finished cells on disk (figure 4's --resume)
    figure4.py       Fig. 4, Sec. 4.2.1: self-improvement and the synthetic augmentation loop
    figure5.py       Fig. 5, Sec. 4.2.2: training on polluted data
    figure6.py       Fig. 6, Sec. 4.3: shifting a model's group mix
    autoguidance.py  autoguidance's bad model beside SIMS's aux at generation 1
    when_sims_helps.py  base budget x aux budget x w at generation 1, and the first-order
                     covariance argument for when SIMS helps (issue 11)

Each module has ``PRESETS`` (frozen dataclass instances), ``build_parser()``, ``main(argv)`` and
``entry()``; ``python -m minisims.figures.figure4 --preset tiny`` works too.
"""
