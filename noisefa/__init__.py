"""noisefa: feedback alignment with random-noise pretraining, as a training service."""

__version__ = "0.1.0"
