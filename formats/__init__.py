"""The files between the stages, and nothing else: torch-free, imported by distill, export and runtime.

- ``formats.errors``: the one user-error type (``UserError``) and the CLI wrapper that prints it;
- ``formats.files``: atomic writes (temporary file, then rename), sha256, strict JSON reading;
- ``formats.cli``: command lines generated from settings dataclasses (one coercion, strict);
- ``formats.preprocessing``: the preprocessing spec and its numpy/Pillow implementation;
- ``formats.labels``: the file-based dataset readers (CUB-200-2011, class folders, label names);
- ``formats.datasets``: the dataset spec a checkpoint records, image sources, the train/val/test rule;
- ``formats.checkpoint``: the student checkpoint's metadata (schema ``vl2lite-student``);
- ``formats.manifest``: the bundle manifest and its artifact entries (schema ``vl2lite-bundle``);
- ``formats.accuracy``: the one accuracy-budget rule, its verdict, parity against PyTorch;
- ``formats.quantization``: an INT8 artifact's quantization record (recipe, graph counts, attempts);
- ``formats.qat``: ``qat.json`` of ``python -m export.qat`` (schema ``vl2lite-edge/qat``);
- ``formats.bundle``: reading and verifying a bundle folder;
- ``formats.cache``: the teacher cache's ``meta.json`` (what was cached, for which setup);
- ``formats.schema``: the one checker that reads JSON dicts into these dataclasses;
- ``formats.records``: the same for records nested at any depth, and back to JSON.

Each file format is a frozen dataclass that reads and writes JSON-able dicts, checks its schema
version, and has no silent defaults: a missing field is one error naming the field and the fix.
The stages never import each other; what one stage writes and the next reads is defined here.
"""
