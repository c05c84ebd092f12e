"""INT8 ONNX (``--int8``): ``model.int8.onnx`` (U8S8, onnxruntime CPU) and ``model.int8.trt.onnx``
(S8S8, TensorRT), calibrated and held to the accuracy budget by the remedy ladder, or, with
``--qat <folder>``, the graphs ``python -m export.qat`` trained (no calibration). ``export.int8``
holds the quantization itself.
"""
from __future__ import annotations

from pathlib import Path

from export.int8.ptq import calibrated, check_calibration_count, trained
from export.int8.qat_folder import read_qat
from export.job import Backend, Built, ExportJob
from export.settings import ExportOptions
from formats.datasets import DatasetSplits


def check(options: ExportOptions, checkpoint: Path, splits: DatasetSplits) -> None:
    """Before any work: the QAT folder belongs to this checkpoint, or enough images calibrate."""
    if options.qat is not None:
        read_qat(options.qat, checkpoint)
    else:
        check_calibration_count(len(splits.train), options)


def build(job: ExportJob) -> Built:
    if job.options.qat is not None:  # trained by python -m export.qat: nothing to calibrate
        return Built(tuple(trained(job, read_qat(job.options.qat, job.checkpoint))))
    return Built(tuple(calibrated(job)))


BACKEND = Backend(name="int8", order=20, build=build, check=check,
                  help="model.int8.onnx (U8S8, onnxruntime CPU) + model.int8.trt.onnx (S8S8, TensorRT)")
