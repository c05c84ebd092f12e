"""The student networks, shared by training (distill) and conversion (export): torch, never a stage.

- ``students.registry``: students by name (``create_student``, ``list_students``, ``deployable``), dispatched
  by the name's prefix to its family;
- ``students.families``: one module per family (``torchvision``: bare names, ``timm``: ``timm:<name>``),
  each registering a ``StudentFamily`` (``students.families.base``) under its prefix;
- ``students.checkpoint``: a checkpoint file read safely (``weights_only``), its metadata checked by
  ``formats.checkpoint`` and its weights by the architecture (``load_student``);
- ``students.reference``: the checkpoint as a PyTorch session, the reference row of ``runtime.bench``
  (found through the ``vl2lite_edge.reference_sessions`` entry point; the runtime never imports torch).
"""
