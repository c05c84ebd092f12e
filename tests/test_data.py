"""Dataset loaders on generated data: CUB layout, labels, splits, bad input, seeded views."""
import shutil

import pytest
import torch
from PIL import Image

from distill.config import DataConfig
from distill.data import TrainViews, ViewSchedule, load_dataset
from distill.transforms import TargetSpec, ViewSampler, eval_transform, preprocessing_spec
from formats.errors import UserError
from formats.labels import clean_class_name, stratified_split


def cub(root, **kw) -> DataConfig:
    return DataConfig(name="cub", root=str(root), input_size=32, resize_size=36, **kw)


def test_cub_loader_reads_native_layout(synthetic_root):
    splits = load_dataset(cub(synthetic_root, val_fraction=0.25))
    assert len(splits.class_names) == 10
    assert splits.class_names[0] == "Crimson blackwinged Finch"
    assert len(splits.train) + len(splits.val) == 240 and len(splits.test) == 80
    assert sorted(set(splits.val.labels)) == list(range(10))  # stratified: every class in val
    img = splits.test.load(0)
    assert img.mode == "RGB"


def test_class_name_cleaning():
    assert clean_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert clean_class_name("Laysan_Albatross") == "Laysan Albatross"


def test_labels_do_not_depend_on_listing_order(synthetic_root, tmp_path):
    shuffled = tmp_path / "shuffled"
    shutil.copytree(synthetic_root, shuffled)
    for name in ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt"):
        lines = (shuffled / name).read_text().splitlines()
        (shuffled / name).write_text("\n".join(reversed(lines)) + "\n")
    a, b = load_dataset(cub(synthetic_root)), load_dataset(cub(shuffled))
    assert a.class_names == b.class_names
    assert [p.name for p in a.test.paths] == [p.name for p in b.test.paths]
    assert a.test.labels == b.test.labels and a.train.labels == b.train.labels


def test_validation_split_is_seeded_and_disjoint():
    labels = [i % 4 for i in range(40)]
    keep1, held1 = stratified_split(labels, 0.25, seed=3)
    keep2, held2 = stratified_split(labels, 0.25, seed=3)
    _, held3 = stratified_split(labels, 0.25, seed=4)
    assert (keep1, held1) == (keep2, held2) and held1 != held3
    assert not set(keep1) & set(held1) and len(keep1) + len(held1) == 40
    assert sorted(labels[i] for i in held1) == sorted([0, 1, 2, 3] * 3)


def test_missing_folder_and_wrong_layout(tmp_path):
    with pytest.raises(UserError, match="not found: set data.root"):
        load_dataset(cub(tmp_path / "nope"))
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="classes.txt is missing: a CUB-200-2011 folder needs"):
        load_dataset(cub(tmp_path))


def test_missing_image_is_reported(synthetic_root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken)
    first = (broken / "images.txt").read_text().split()[1]
    (broken / "images" / first).unlink()
    with pytest.raises(UserError, match="1 images listed .* are missing"):
        load_dataset(cub(broken))


def test_corrupt_image_names_the_file(synthetic_root, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(synthetic_root, broken)
    splits = load_dataset(cub(broken))
    victim = splits.test.paths[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(UserError, match=f"image {victim} is corrupt or unreadable"):
        splits.test.load(0)


def test_imagefolder_loader(tmp_path):
    for cls in ("b_cat", "a_dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(5):
            Image.new("RGB", (20, 20), (k * 40, 0, 0)).save(tmp_path / "imgs" / cls / f"{k}.png")
    names = tmp_path / "names.tsv"
    names.write_text("a_dog\tDog\nb_cat\tCat\n")
    splits = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "imgs"), label_names=str(names)))
    assert splits.class_names == ["Dog", "Cat"]  # sorted folders, mapped names
    assert len(splits.train) + len(splits.val) + len(splits.test) == 10
    assert len(splits.test) == 2  # 20% of each class


def test_views_are_a_pure_function_of_seed_index_view(synthetic_root):
    splits = load_dataset(cub(synthetic_root))
    sampler = ViewSampler(seed=7, scale=(0.3, 1.0), hflip=True)
    student = TargetSpec(32, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    teacher = TargetSpec(48, "bicubic", (0.4, 0.4, 0.4), (0.3, 0.3, 0.3))
    ds = TrainViews(splits.train, sampler, student, teacher)
    ds.set_view(ViewSchedule(seed=7, epoch=3))
    xs1, xt1, y, y2, lam, i, v = ds[5]
    xs2, xt2, *_ = ds[5]
    assert (y2, lam) == (y, 1.0)  # no blends configured: the own label, all of it
    assert torch.equal(xs1, xs2) and torch.equal(xt1, xt2)
    assert xs1.shape == (3, 32, 32) and xt1.shape == (3, 48, 48) and (i, v) == (5, 3)
    ds.set_view(ViewSchedule(seed=7, epoch=4))
    assert not torch.equal(ds[5][0], xs1)  # another epoch, another view
    # With K cached views, an epoch picks one of the K for every image.
    views = {ViewSchedule(seed=7, epoch=e, num_views=3)(11) for e in range(30)}
    assert views == {0, 1, 2}


def test_student_and_teacher_see_the_same_crop(synthetic_root):
    splits = load_dataset(cub(synthetic_root))
    sampler = ViewSampler(seed=1, scale=(0.3, 1.0), hflip=True)
    spec = TargetSpec(32, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    ds = TrainViews(splits.train, sampler, spec, TargetSpec(64, "bilinear", (0.0,) * 3, (1.0,) * 3))
    x_s, x_t, *_ = ds[0]
    down = torch.nn.functional.avg_pool2d(x_t[None], 2)[0]  # teacher view at the student's size
    assert (down - x_s).abs().mean() < 0.03


def test_fresh_student_views_noise_the_student_not_the_teacher(synthetic_root):
    """data.unlabeled_student_view=fresh: the student's crop changes every epoch, the teacher's view (the cached
    target's index) stays the scheduled one and is rendered exactly as without the option."""
    splits = load_dataset(cub(synthetic_root))
    teacher_views = ViewSampler(seed=1, scale=(1.0, 1.0), hflip=False)  # the pool's cached view: the whole image
    spec, t_spec = TargetSpec(32, "bilinear", (0.0,) * 3, (1.0,) * 3), TargetSpec(48, "bilinear", (0.0,) * 3, (1.0,) * 3)
    fresh = TrainViews(splits.train, teacher_views, spec, t_spec, ViewSampler(seed=9, scale=(0.2, 0.4), hflip=True))
    same = TrainViews(splits.train, teacher_views, spec, t_spec)
    student_views = []
    for epoch in (0, 1, 2):
        for ds in (fresh, same):
            ds.set_view(ViewSchedule(seed=5, epoch=epoch, num_views=1))
        x_s, x_t, y, y2, lam, i, v = fresh[3]
        ref_s, ref_t, ref_y, *_, ref_v = same[3]
        assert torch.equal(x_t, ref_t) and (y, y2, lam, i, v) == (ref_y, ref_y, 1.0, 3, ref_v)
        assert not torch.allclose(x_s, ref_s, atol=0.05)  # a crop of a fifth to two fifths is not the whole image
        assert torch.equal(x_s, fresh[3][0])  # a pure function of (seed, index, epoch)
        student_views.append(x_s)
    assert not torch.equal(student_views[0], student_views[1]) and not torch.equal(student_views[1], student_views[2])


def test_unlabeled_student_view_is_checked():
    with pytest.raises(UserError, match="data.unlabeled_student_view"):
        DataConfig(unlabeled_student_view="random")


def test_blended_views_are_pure_and_keep_the_crops(synthetic_root):
    splits = load_dataset(cub(synthetic_root))
    n, spec = len(splits.train), TargetSpec(32, "bilinear", (0.5,) * 3, (0.25,) * 3)
    plain = ViewSampler(seed=3, scale=(0.3, 1.0), hflip=True)
    mixup = ViewSampler(seed=3, scale=(0.3, 1.0), hflip=True, mix="mixup", mix_prob=1.0, mix_alpha=1.0)
    m = mixup.mix_params(4, 2, n)
    assert m is not None and m.partner != 4 and 0.0 <= m.lam <= 1.0 and m.box is None
    assert mixup.mix_params(4, 2, n) == m and mixup.mix_params(4, 3, n) != m  # pure in (seed, i, v)
    own, partner = splits.train.load(4), splits.train.load(m.partner)
    a = plain.render(own, plain.params(4, 2, *own.size), spec)  # the crops do not move with mixing on
    b = plain.render(partner, plain.params(m.partner, 2, *partner.size), spec)
    (x,), y2, lam = mixup.sample(splits.train, 4, 2, [spec])
    assert torch.allclose(x, m.lam * a + (1 - m.lam) * b, atol=1e-6)
    assert (y2, lam) == (splits.train.labels[m.partner], m.lam)
    # cutmix: a square of area 1 - lam comes from the partner, the rest is the image's own view
    cutmix = ViewSampler(seed=3, scale=(0.3, 1.0), hflip=True, mix="cutmix", mix_prob=1.0, mix_alpha=1.0)
    c = cutmix.mix_params(4, 2, n)
    top, left, h, w = (round(f * 32) for f in c.box)
    assert c.lam == pytest.approx(1 - c.box[2] * c.box[3])
    (x,), _, _ = cutmix.sample(splits.train, 4, 2, [spec])
    b = plain.render(splits.train.load(c.partner), plain.params(c.partner, 2, *splits.train.load(c.partner).size), spec)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[top:top + h, left:left + w] = True
    assert inside.any() and torch.equal(x[:, inside], b[:, inside]) and torch.equal(x[:, ~inside], a[:, ~inside])
    # mix_prob blends that share of the views, and never with one image alone
    half = ViewSampler(seed=3, scale=(0.3, 1.0), hflip=True, mix="mixup", mix_prob=0.5)
    share = sum(half.mix_params(i, v, n) is not None for i in range(n) for v in range(20)) / (20 * n)
    assert 0.35 < share < 0.65
    assert half.mix_params(0, 0, 1) is None


def test_eval_transform_matches_spec(synthetic_root):
    pre = preprocessing_spec(cub(synthetic_root))
    img = Image.new("RGB", (80, 50), (255, 0, 0))
    x = eval_transform(pre)(img)
    assert x.shape == (3, 32, 32)
    assert x[0].mean().item() == pytest.approx((1.0 - pre["mean"][0]) / pre["std"][0], rel=1e-5)
