"""The student networks, shared by training (distill) and conversion (export): torch, never a stage.

- ``students.registry``: the registered architectures (``create_student``, ``list_students``);
- ``students.checkpoint``: a checkpoint file read safely (``weights_only``), its metadata checked by
  ``formats.checkpoint`` and its weights by the architecture (``load_student``);
- ``students.reference``: the checkpoint as a PyTorch session, the reference row of ``runtime.bench``
  (found through the ``vl2lite_edge.reference_sessions`` entry point; the runtime never imports torch).
"""
