"""The teacher cache's files as typed contracts (formats.cache): caches already on disk stay readable,
with the identity they were built with; anything else is refused, naming the fix."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from formats.cache import (CacheKey, CacheMeta, FileRecord, PoolCacheKey, describe_mismatch, fingerprint,
                           key_fields, read_key)
from formats.errors import UserError

# meta.json files exactly as the toolkit wrote them before schema_version existed (a cache of the tiny teacher,
# and the unlabeled part of a real cache: data/kd-pool/fmnist-30-cache-k16)
LABELED = {
    "fingerprint": "6341e380de22368f2ec59ad1c3a0c0c1f3e22738f2a277474e79947654026709",
    "fields": {"format": 2, "teacher.model": "vl2lite-tiny", "teacher.pretrained": "none", "teacher.files": [],
               "data.name": "cub", "data.train_images": 60,
               "data.train_files_sha256": "dec6b815206ce2195fabc450a1a4abc4615f4b15c7b89fc5876fd0771cfaf0d5",
               "data.val_images": 12,
               "data.val_files_sha256": "92bf66e911f0b8a640c46e7d6835623ed4d9947460a7b632d24af48086962cd2",
               "data.classes_sha256": "1ccf94a208603c0121933fb04b482a8efd2a458480382eac81cd5c5a7ba5194f",
               "data.prompts": ["a photo of {}, a type of bird."], "data.crop_scale_min": 0.35, "data.hflip": True,
               "teacher.cache_seed": 0, "teacher.cache_views": 2, "teacher.cache_shard_size": 512},
    "num_images": 60, "num_views": 2, "dim": 64, "shard_size": 512, "num_shards": 1,
    "teacher_input": {"size": 32, "interpolation": "bicubic", "mean": [0.48145466, 0.4578275, 0.40821073],
                      "std": [0.26862954, 0.26130258, 0.27577711]}}
POOL = {
    "fingerprint": "5742202720a9189e945c7919d9f1b4c3eed0a6b681f7bf74550d663224f89e87",
    "fields": {"format": 2, "teacher.model": "local-dir:data/kd-gain/teacher", "teacher.pretrained": "none",
               "teacher.files": [
                   {"name": "config.json", "bytes": 612,
                    "sha256_head_tail": "b285be52e20876e9483da4317466747b31f7bc4e3babbcbb2fc3ffd932acd1e0"},
                   {"name": "open_clip_config.json", "bytes": 759,
                    "sha256_head_tail": "58e7ee5afb14fb0f8f9e7f608a09e28e977bb1e841b313c699f90a66f2c71574"},
                   {"name": "open_clip_model.safetensors", "bytes": 105925580,
                    "sha256_head_tail": "37cfb0048d4a7adc667ebb6905fb00803fb634dc9d7c1eda479c5f57a61c89b2"},
                   {"name": "special_tokens_map.json", "bytes": 112,
                    "sha256_head_tail": "78af72365fc3cb252dc979af866cd9b1e27b2d0c49eac809e402dd1b15b09406"},
                   {"name": "tokenizer.json", "bytes": 466247,
                    "sha256_head_tail": "e706fb192ba902db59810332f13490e6304a7382eb8713b7aeb21fd3f40856f4"},
                   {"name": "tokenizer_config.json", "bytes": 350,
                    "sha256_head_tail": "e27a37f9feca026725ee5d148040e578e1d0def67fde2a2822c0a663fb0b193f"}],
               "data.unlabeled_images": 5000,
               "data.unlabeled_sha256": "ce21873159b4e5081cbf4131bdddbbe8c8a005c21fed489e988fd06acb63ae31",
               "data.unlabeled_crop_scale_min": 0.35, "data.hflip": True, "teacher.cache_seed": 0,
               "teacher.unlabeled_views": 1, "teacher.cache_shard_size": 512},
    "num_images": 5000, "num_views": 1, "dim": 384, "shard_size": 512, "num_shards": 10,
    "teacher_input": {"size": 224, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def write(tmp_path, d) -> CacheMeta:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(d))
    return CacheMeta.read(path, "rebuild it")


@pytest.mark.parametrize("old, kind", [(LABELED, CacheKey), (POOL, PoolCacheKey)])
def test_a_meta_json_written_before_versioning_keeps_its_identity(tmp_path, old, kind):
    meta = write(tmp_path, old)
    assert type(meta.fields) is kind and meta.schema_version == 1
    assert fingerprint(meta.fields) == old["fingerprint"]  # the key hashes as the old dict did
    assert meta.to_dict() == {"schema_version": 1, **old}  # nothing dropped, renamed or retyped
    assert list(key_fields(meta.fields)) == list(old["fields"])  # the same field order in the file
    assert write(tmp_path, meta.to_dict()) == meta  # and what this toolkit writes, it reads back


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema_version=2), r"schema version 2, this toolkit reads 1: rebuild it"),
    (lambda d: d.update(shards=3), r"unknown field 'shards'.*: rebuild it"),
    (lambda d: d["fields"].update({"teacher.colour": "red"}), r"fields has an unknown field 'teacher.colour'"),
    (lambda d: d["fields"].pop("data.hflip"), r"fields lacks the field 'data.hflip': rebuild it"),
    (lambda d: d["fields"].update({"teacher.cache_views": "2"}), r"teacher_cache_views must be int, not str"),
    (lambda d: d["fields"]["teacher.files"].append({"name": "x"}), r"teacher_files\[0\] lacks the field 'bytes'"),
    (lambda d: d.pop("teacher_input"), r"lacks the field 'teacher_input'"),
    (lambda d: d["teacher_input"].update(size=None), r"teacher_input: size must be int, not NoneType"),
    (lambda d: d["fields"].update({"teacher.cache_seed": 1}), r"fingerprint does not match its fields"),
])
def test_a_meta_json_of_another_shape_is_refused_naming_the_fix(tmp_path, edit, message):
    d = copy.deepcopy(LABELED)
    edit(d)
    with pytest.raises(UserError, match=message):
        write(tmp_path, d)


def test_blended_views_are_part_of_the_key_only_when_used():
    plain = read_key(LABELED["fields"], "meta.json: fields", "")
    mixed = dataclasses.replace(plain, data_mix="mixup", data_mix_prob=0.5, data_mix_alpha=1.0)
    assert "data.mix" not in key_fields(plain)  # caches without blends keep the identity they had
    assert key_fields(mixed)["data.mix"] == "mixup" and fingerprint(mixed) != fingerprint(plain)
    assert describe_mismatch(plain, mixed) == ("data.mix: cache None vs config 'mixup'; data.mix_alpha: cache None "
                                               "vs config 1.0; data.mix_prob: cache None vs config 0.5")


def test_file_records_of_old_caches_read_and_others_are_refused(tmp_path):
    shard, val = tmp_path / "shard_00000.json", tmp_path / "val.json"
    shard.write_text('{"start": 0, "stop": 60, "seconds": 0.09, "bytes": 15488, "sha256": "076c"}')
    val.write_text('{"bytes": 3200, "sha256": "c07e"}')
    assert FileRecord.read(shard, "") == FileRecord(15488, "076c", 0, 60, 0.09)
    assert FileRecord.read(val, "").to_dict() == {"bytes": 3200, "sha256": "c07e"}
    val.write_text('{"bytes": "3200", "sha256": "c07e"}')
    with pytest.raises(UserError, match="val.json: bytes must be int, not str: resume the build"):
        FileRecord.read(val, "resume the build")
