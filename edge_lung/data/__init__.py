"""Data: the ICBHI 2017 reader (`icbhi`: layout, annotations, patient-grouped validation split, the
one split loader, the decoded-audio cache) and the synthetic database (`synth`).

May import: the core modules (config, fileio, audio, features, metrics, scoring). Torch-free.
"""
