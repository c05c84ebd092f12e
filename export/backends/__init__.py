"""One module per export backend, each declaring ``BACKEND = export.job.Backend(...)``.

``export.registry`` finds and imports every module here (a module that declares no backend is an
error). The modules: ``onnx_fp32`` (always built), ``fp16``, ``int8``, ``tensorrt``, ``triton``. A
backend reads what backends earlier in the order wrote, and may import their file names
(``tensorrt`` builds its engines from ``fp16``'s and ``int8``'s graphs).
"""
