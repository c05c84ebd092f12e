"""Torch-free inference for vl2lite bundles: predict, bench and serve on the device.

Imports numpy, Pillow and onnxruntime (or TensorRT) only; never torch or distill, so a Jetson or
an edge box installs the light base package. Entry points::

    python -m runtime.predict <bundle> <image>...
    python -m runtime.bench <bundle> [--backend ...] [--batch 1,8,32] [--data DIR]
    python -m runtime.serve <bundle> [--host 127.0.0.1] [--port 8000]

``predict`` and ``serve`` run the fastest artifact within the accuracy budget for this device
unless ``--artifact`` names one, and say which (``runtime.choice``). ``runtime.client.Client`` calls
a running server from Python (urllib, numpy, Pillow), preprocessing with the runtime's own code.

Library use: ``formats.bundle.load_bundle``, ``runtime.model.open_classifier``,
``formats.preprocessing.preprocess_image``, ``runtime.predict.predict_files``,
``runtime.bench.run_bench`` / ``run_bench_many`` (bench.json and frontier.json: ``formats.bench``,
``formats.frontier``), ``runtime.serve.create_app``; the settings of each command in
``runtime.settings``.
"""
