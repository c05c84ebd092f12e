"""Export a distilled student into a deployable bundle (ONNX FP32/FP16/INT8, TensorRT, Triton).

Library first: ``export.api.export_bundle(checkpoint, out, ExportOptions(...))``; the CLI in
``export/__main__.py`` only parses arguments. The bundle layout is the contract in docs/bundle.md.
"""
__version__ = "0.1.0"
