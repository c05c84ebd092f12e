"""``python -m export.qat``: the command line of quantization-aware training (``export/qat/__main__.py``).

The library is ``export.int8.qat`` (``from export import quantization_aware_training, QatSettings``).
"""
