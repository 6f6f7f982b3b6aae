"""The FA engine: learning rules, models, noise pretraining, training loop, metrics.

Pure PyTorch: no web, no database. ``spec`` and ``limits`` import no torch.
"""
