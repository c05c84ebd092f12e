"""INT8: post-training quantization held to the accuracy budget, and quantization-aware training.

Static Q/DQ quantization in two flavours from one calibration (``flavours``): U8S8 (uint8
activations, int8 weights) for onnxruntime on CPUs, where only that combination hits the fast
integer kernels, and symmetric S8S8 for TensorRT, which accepts only signed symmetric Q/DQ.
Precision lives in the graph, so TensorRT 10 and 11 both build INT8 engines from
``model.int8.trt.onnx`` without calibrators.

- ``flavours``: the two flavours, ``quantize`` and ``verify_int8`` (a graph is INT8 or refused);
- ``graph``: calibration batches, the pre-processed graph, its weighted and shape-arithmetic nodes;
- ``ladder``: the remedy ladder (pure logic: which recipe next, which attempt wins);
- ``safety``: the static check that no U8S8 op can saturate on any x86 CPU;
- ``ptq``: calibrated graphs against real images, the manifest entries (``export.backends.int8``);
- ``fake_quant``, ``qat_ops``, ``qat_graph``: a Q/DQ graph as a trainable torch module;
- ``qat``: quantization-aware training (``python -m export.qat``); ``qat_folder``: what export reads of it.
"""
