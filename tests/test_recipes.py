import dataclasses
import subprocess
import sys

import pytest
import yaml

import timm_scaling
from timm_scaling.errors import UserError
from timm_scaling.recipes import Recipe, list_recipes, load_recipe, recipe_dirs

# The paper's Table 7 study (issue 4): recipe -> model.
STUDY = {
    "baseline": "effnet_b0",
    "depth4": "effnet_b0_d4",
    "width2": "effnet_b0_w2",
    "res2": "effnet_b0_r2",
    "compound": "effnet_b0_phi2",
}


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_builtin_recipes_are_listed():
    assert set(STUDY) | {"digits"} <= set(list_recipes())


@pytest.mark.parametrize("name", STUDY)
def test_study_recipes_differ_from_baseline_only_in_model(name):
    recipe = load_recipe(name).to_dict()
    baseline = load_recipe("baseline").to_dict()
    differing = {key for key in baseline if recipe[key] != baseline[key]}
    expected = set() if name == "baseline" else {"name", "model"}
    assert differing == expected
    assert recipe["model"] == STUDY[name]
    assert recipe["name"] == name


def test_baseline_yaml_shows_every_default():
    path = next(d / "baseline.yaml" for d in recipe_dirs() if (d / "baseline.yaml").is_file())
    keys = set(yaml.safe_load(path.read_text()))
    fields = {field.name for field in dataclasses.fields(Recipe)}
    assert keys == fields - {"name"}
    assert load_recipe("baseline") == Recipe()


def test_study_defaults_follow_the_issue():
    r = load_recipe("baseline")
    assert (r.dataset, r.base_size, r.epochs) == ("cifar10", 32, 35)
    assert (r.optimizer, r.decay, r.momentum) == ("rmsproptf", 0.9, 0.9)
    assert (r.lr_decay_rate, r.lr_decay_epochs, r.weight_decay) == (0.97, 2.4, 1e-5)
    assert (r.drop_rate, r.drop_path_rate) == (0.2, 0.2)
    assert r.opt_eps > 1e-10  # stated, not timm's default


@pytest.mark.parametrize(
    ("name", "size"),
    [("baseline", 32), ("depth4", 32), ("width2", 32), ("res2", 64), ("compound", 42)],
)
def test_image_size_is_base_times_resolution(name, size):
    recipe = load_recipe(name)
    assert recipe.image_size == size
    resolution = {"res2": 2.0, "compound": 1.15**2}.get(name, 1.0)
    assert recipe.image_size == round(32 * resolution)
    assert load_recipe(name, ["base_size=100"]).image_size == round(100 * resolution)


@pytest.mark.parametrize(
    ("name", "overrides", "peak"),
    [
        ("baseline", [], 0.008),  # the paper's 0.256 per 4096 at batch 128
        ("baseline", ["batch_size=512"], 0.032),
        ("baseline", ["batch_size=64", "lr_base_scale=sqrt"], 0.016 * 0.5),
        ("baseline", ["batch_size=512", "lr=0.01"], 0.01),  # given outright: as given
        ("depth4", ["batch_size=32"], 0.002),
        ("imagenet", [], 0.016),
        ("folder-small", [], 0.008),  # batch 128
        ("digits", [], 0.0005),
        ("digits", ["batch_size=64"], 0.001),
    ],
)
def test_peak_lr_follows_the_batch_as_timm_scales_it(name, overrides, peak):
    assert load_recipe(name, overrides).peak_lr == pytest.approx(peak, rel=1e-12)


def test_lr_text_says_where_the_peak_lr_comes_from():
    assert load_recipe("digits", ["batch_size=64"]).lr_text() == "0.001 (lr_base 0.0005 x 64/32)"
    sqrt = load_recipe("baseline", ["lr_base_scale=sqrt", "batch_size=1024"])
    assert sqrt.lr_text() == "0.032 (lr_base 0.016 x sqrt(1024/256))"
    assert load_recipe("baseline", ["lr=0.02"]).lr_text() == "0.02"


def test_lr_rule_keys_are_checked():
    for override, words in (
        ("lr_base=0", ["lr_base", "above 0"]),
        ("lr_base_size=0", ["lr_base_size", "1 or more"]),
        ("lr_base_scale=log", ["lr_base_scale", "linear", "sqrt"]),
    ):
        with pytest.raises(UserError) as err:
            load_recipe("baseline", [override])
        assert all(word in _one_line(err) for word in words), _one_line(err)


def test_overrides_are_typed_by_yaml():
    r = load_recipe("baseline", ["lr=0.1", "ema=true", "limit_train=100", "data_dir=/tmp/x"])
    assert r.lr == 0.1 and isinstance(r.lr, float)
    assert r.ema is True
    assert r.limit_train == 100 and isinstance(r.limit_train, int)
    assert r.data_dir == "/tmp/x"
    r = load_recipe("baseline", ["lr=1", "weight_decay=1e-4", "data_dir=null"])
    assert isinstance(r.lr, float) and r.lr == 1.0
    assert r.weight_decay == 1e-4 and isinstance(r.weight_decay, float)
    assert r.data_dir is None


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("lrr=0.1", ["--set lrr=0.1", "'lrr'", "allowed keys", "lr,"]),
        ("epoch=3", ["unknown key 'epoch'; did you mean epochs? allowed keys"]),
        ("ema=3", ["ema", "true or false", "3"]),
        ("epochs=true", ["epochs", "an integer"]),
        ("epochs=2.5", ["epochs", "an integer"]),
        ("lr=fast", ["lr", "a number", "fast"]),
        ("dataset=imagenet", ["dataset", "cifar10, cifar100, digits, mnist, fashion_mnist"]),
        ("lr=0", ["lr", "above 0"]),
        ("drop_rate=1", ["drop_rate", "[0, 1)"]),
        ("lr_decay_rate=0", ["lr_decay_rate", "(0, 1]", "1: no decay"]),
        ("grad_accum=3", ["batch_size", "multiple of grad_accum"]),
        ("model=effnet_b0_q2", ["model", "effnet_b0_q2", "effnet_b0[_d"]),
        ("lr", ["key=value"]),
    ],
)
def test_bad_overrides_give_one_line(override, words):
    with pytest.raises(UserError) as err:
        load_recipe("baseline", [override])
    text = _one_line(err)
    for word in words:
        assert word in text


def test_bad_key_in_a_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: baseline\nepochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    text = _one_line(err)
    assert str(path) in text and "'learning_rate'" in text and "allowed keys" in text


def test_wrong_type_in_a_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: many\n")
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    text = _one_line(err)
    assert str(path) in text and "epochs must be an integer" in text


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: [1, 2\n")
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    assert str(path) in _one_line(err)


def test_missing_file_is_one_line(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    text = _one_line(err)
    assert str(path) in text and "baseline" in text


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(UserError) as err:
        load_recipe("depth5")
    text = _one_line(err)
    assert "'depth5'" in text
    for name in list_recipes():
        assert name in text


def test_a_user_file_inherits_a_builtin(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("base: res2\nepochs: 2\n")
    recipe = load_recipe(str(path), ["seed=3"])
    expected = dataclasses.replace(load_recipe("res2"), name="short", epochs=2, seed=3)
    assert recipe == expected


def test_inheritance_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(UserError) as err:
        load_recipe(str(tmp_path / "a.yaml"))
    assert "cycle" in _one_line(err)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe("compound", ["lr=0.02", "ema=true", "limit_val=7"])
    path = tmp_path / "run" / "recipe.yaml"
    recipe.write(path)
    assert load_recipe(str(path)) == recipe
    assert yaml.safe_load(path.read_text())["name"] == "compound"


def test_packaged_recipes_come_first(tmp_path, monkeypatch):
    package = tmp_path / "timm_scaling"
    (package / "recipes").mkdir(parents=True)
    (tmp_path / "recipes").mkdir()
    (package / "recipes" / "only_packaged.yaml").write_text("epochs: 1\n")
    monkeypatch.setattr(timm_scaling, "__file__", str(package / "__init__.py"))
    assert recipe_dirs() == [package / "recipes", tmp_path / "recipes"]
    assert list_recipes() == ["only_packaged"]


def test_recipes_module_imports_no_torch():
    code = "import sys, timm_scaling.recipes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_tagged_timm_name_trains_the_untagged_model_and_says_so(caplog):
    # issue 34.8: the tag names weights that are never loaded; the run and its row name what
    # was built, and the user is told
    with caplog.at_level("WARNING"):
        recipe = load_recipe("digits", ["model=efficientnet_b0.ra_in1k"])
    assert recipe.model == "efficientnet_b0"
    (record,) = caplog.records
    assert "'ra_in1k' names pretrained weights" in record.message
    assert "training efficientnet_b0 from scratch" in record.message
    caplog.clear()
    for name in ("resnet18", "effnet_b0_w1p4", "hf-hub:timm/resnet18.a1_in1k"):
        assert load_recipe("digits", [f"model={name}"]).model == name
    assert not caplog.records
