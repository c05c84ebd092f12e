"""timm students: ``student.arch: timm:<model name>``, any image model timm can build.

The backbone is ``timm.create_model(name, num_classes=0)`` (its pooled pre-logits features, width
``head_hidden_size``, discovered from the model); the project adds its own ``classifier``. ImageNet
weights come through timm's normal loading (the Hugging Face hub, or its local cache); offline and
not cached, the error names the file to fetch. A local weights file (``.safetensors`` or a
``.pth`` state_dict, with or without timm's ImageNet classifier) works offline.

``SHIPPED`` are the families the tests export (ONNX parity, complete INT8 graph) on every change;
other timm names work the same way, untested here. Re-parameterisable families (MobileOne,
FastViT, RepViT) train in their multi-branch form and are fused by ``deployable`` before export;
TensorFlow-ported families (``tf_*``: "same" padding computed from the input's shape at run time)
get their padding fixed for the bundle's input size there (``static_same_padding``).
"""
from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from formats.errors import UserError
from formats.network import reachable
from students.families.base import StudentFamily, register_family, weights_file_problem
from students.weights import read_state_dict

PREFIX = "timm:"
# One small member of each edge family (tested: tests/test_export_students.py).
SHIPPED = ("timm:mobilenetv4_conv_small", "timm:efficientvit_b0", "timm:fastvit_t8", "timm:repvit_m0_9",
           "timm:mobileone_s0", "timm:ghostnet_100", "timm:efficientnet_lite0", "timm:convnext_atto")


def _problem(arch: str) -> str | None:
    """None for a model timm can build; else one sentence with timm's closest names."""
    import timm

    name = arch[len(PREFIX):]
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else "see timm.list_models()"
    return f"unknown timm student {arch!r}: {hint} (tested families: {', '.join(SHIPPED)})"


def _build(arch: str, weights: str) -> tuple[nn.Module, int]:
    """(backbone giving (B, d) pooled features, d) for ``timm:<name>``; ``weights``: imagenet, none or a file."""
    import timm

    name = arch[len(PREFIX):]
    if weights == "imagenet":
        _require_cached_imagenet(arch, name)
        model = timm.create_model(name, pretrained=True, num_classes=0)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        if weights != "none":
            _load_local(model, arch, Path(weights))
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(width)


def _require_cached_imagenet(arch: str, name: str) -> None:
    """Fail at once, naming the file, when the weights are neither cached nor downloadable."""
    missing = _missing_weights(arch, "imagenet")
    if missing:
        raise UserError(missing)


def _missing_weights(arch: str, weights: str) -> str | None:
    """ImageNet weights neither in the Hugging Face cache nor downloadable: the file to fetch, the alternatives."""
    import huggingface_hub
    import timm

    if weights != "imagenet" or _problem(arch) is not None:
        return weights_file_problem(arch, weights)
    hub_id = getattr(timm.models.get_pretrained_cfg(arch[len(PREFIX):]), "hf_hub_id", None)
    if not hub_id:
        return (f"timm has no downloadable ImageNet weights for the student {arch}: pass student.weights=<a local "
                f"weights file> or student.weights=none")
    cached = any(isinstance(huggingface_hub.try_to_load_from_cache(hub_id, f), str)
                 for f in ("model.safetensors", "pytorch_model.bin"))
    if cached or reachable("huggingface.co"):
        return None
    return (f"ImageNet weights for the student {arch} are not in the Hugging Face cache and huggingface.co is "
            f"unreachable: download https://huggingface.co/{hub_id}/resolve/main/model.safetensors on a machine with "
            f"internet and pass student.weights=<that file> (or copy its ~/.cache/huggingface here), or train from "
            f"scratch with student.weights=none")


def _load_local(model: nn.Module, arch: str, path: Path) -> None:
    """A local state_dict into the headless model; timm's ImageNet classifier keys are dropped."""
    state = read_state_dict(path, arch)
    heads = [c for c in _classifier_names(model) if c]
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(ln.strip() for ln in str(exc).strip().splitlines()[:2])[:300]
        raise UserError(f"student.weights file {path} does not fit {arch} ({detail}): pass weights of that "
                        f"exact timm model") from None


def _classifier_names(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", ()) if isinstance(cfg, dict) else ()
    return [names] if isinstance(names, str) else list(names)


def _pretrained_normalization(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) timm's ImageNet weights of ``timm:<name>`` were trained with (0.5/0.5 for some families)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch[len(PREFIX):])
    if cfg is None or not cfg.mean or not cfg.std:
        return None
    return tuple(cfg.mean), tuple(cfg.std)


def _deploy(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """Re-parameterisable branches fused (a copy), then TF "same" padding fixed for ``input_size``."""
    return static_same_padding(fuse(model), input_size)


def fuse(model: nn.Module) -> nn.Module:
    """The inference form: re-parameterisable branches fused (a copy; identity for other models)."""
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model, inplace=False)


def static_same_padding(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """``model`` with timm's run-time "same" padding (``Conv2dSame``, ``MaxPool2dSame``,
    ``AvgPool2dSame``: TF-ported ``tf_*`` models) fixed for inputs of ``input_size`` (H, W); in place.

    The same function at that size, without the shape arithmetic (Shape -> Div -> Ceil -> ... -> Pad)
    the dynamic form puts before every strided layer: measured on an EfficientNet-Lite0 at 224 px
    (2-core Xeon, onnxruntime), FP32 6.0 -> 4.0 ms and INT8 4.7 -> 2.4 ms. A symmetric pad goes into
    the layer's own padding; an asymmetric one (TF pads the bottom/right side more) becomes a constant
    Pad, which onnxruntime folds into the convolution.
    """
    from timm.layers import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    dynamic = (Conv2dSame, MaxPool2dSame, AvgPool2dSame)
    sizes: dict[str, tuple[int, int]] = {}  # module name -> the (H, W) it sees

    def seen(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:  # returns None: the input goes on unchanged
            sizes[name] = tuple(args[0].shape[-2:])
        return hook

    hooks = [m.register_forward_pre_hook(seen(name)) for name, m in model.named_modules() if isinstance(m, dynamic)]
    if not hooks:
        return model
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        for h in hooks:
            h.remove()
    for name, size in sizes.items():
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, attr, _static(getattr(holder, attr), size))
    return model


def _static(m: nn.Module, size: tuple[int, int]) -> nn.Module:
    """The fixed-padding equivalent of one dynamic "same" layer that sees (H, W) = ``size``."""
    from timm.layers import Conv2dSame
    from timm.layers.helpers import to_2tuple
    from timm.layers.padding import pad_same_arg

    if isinstance(m, Conv2dSame):
        left, right, top, bottom = pad_same_arg(list(size), list(m.weight.shape[-2:]), m.stride, m.dilation)
        conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, 0, m.dilation, m.groups,
                         m.bias is not None, padding_mode="zeros")
        conv.load_state_dict(m.state_dict())
        if (left, top) == (right, bottom):
            conv.padding = (top, left)
            return conv
        return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
    kernel, stride = to_2tuple(m.kernel_size), to_2tuple(m.stride)
    dilation = to_2tuple(getattr(m, "dilation", 1))
    pads = pad_same_arg(list(size), list(kernel), list(stride), list(dilation))
    if isinstance(m, nn.MaxPool2d):  # MaxPool2dSame pads with -inf
        return nn.Sequential(nn.ConstantPad2d(pads, float("-inf")),
                             nn.MaxPool2d(kernel, stride, 0, dilation, ceil_mode=m.ceil_mode))
    return nn.Sequential(nn.ZeroPad2d(pads), nn.AvgPool2d(kernel, stride, 0, m.ceil_mode, m.count_include_pad))


FAMILY = register_family(StudentFamily(
    prefix=PREFIX, build=_build, problem=_problem, names=lambda: SHIPPED,
    hint=f"any timm model as timm:<name> (tested: {', '.join(SHIPPED)})", deploy=_deploy,
    pretrained_normalization=_pretrained_normalization, missing_weights=_missing_weights))
