"""edge-lung: train, export and run respiratory-sound classifiers on edge devices."""

__version__ = "0.1.0"
