"""The orchestrator above the stages: the one package that may import every stage's library.

    formats   the files between the stages      (imports nothing of ours)
    students  the student networks               formats
    distill   training                           formats, students
    export    conversion                         formats, students
    runtime   inference on the device            formats
    pipeline  runs the stages one after another  all of the above; nothing of ours imports it

``pipeline.sweep`` trains, exports and benchmarks several students from one teacher cache
(``python -m pipeline sweep``); its settings are in ``pipeline.settings``, its command line in
``pipeline/__main__.py``, and ``sweep.json`` is ``formats.sweep.Sweep``.
"""
