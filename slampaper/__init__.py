"""The reproduction of Zhang, Liu & Deng 2020 (ApJS 246, 9): the book's experiments and machinery.

Each paper section's experiment is a module (:mod:`~slampaper.flux_teff` Figure 1,
:mod:`~slampaper.lasp_test` Section 3, :mod:`~slampaper.kgiants` Sections 4-5,
:mod:`~slampaper.cost`, :mod:`~slampaper.hyperparameters` the appendix), with the Cannon
baseline (:mod:`~slampaper.cannon`), the datasets (:mod:`~slampaper.datasets`), the figures
(:mod:`~slampaper.plotting`), and the book's machinery: the build (:mod:`~slampaper.bookbuild`),
the sweeps (:mod:`~slampaper.sweeps`), the records (:mod:`~slampaper.results`) and the
scorecard (:mod:`~slampaper.scorecard`). It depends on :mod:`slamlib`, never the reverse, and
needs the ``[book]`` extra.
"""
