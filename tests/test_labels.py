"""Class names: 1000 in each language, in class-index order."""

from __future__ import annotations

import pytest

from app import labels


@pytest.mark.parametrize("lang", labels.LANGUAGES)
def test_exactly_1000_non_empty_distinct_names(lang):
    names = labels.names(lang)
    assert len(names) == 1000
    assert all(name.strip() == name and name for name in names)
    assert len(set(names)) == 1000


@pytest.mark.parametrize(
    ("index", "en", "zh"),
    [
        (0, "tench", "丁鲷"),
        (1, "goldfish", "金鱼"),
        (134, "crane bird", "鹤"),
        (207, "golden retriever", "金毛寻回犬"),
        (281, "tabby", "虎斑猫"),
        (388, "giant panda", "大熊猫"),
        (517, "crane", "起重机"),
        (620, "laptop", "笔记本电脑"),
        (920, "traffic light", "交通信号灯"),
        (999, "toilet tissue", "卫生纸"),
    ],
)
def test_names_are_in_class_order(index, en, zh):
    assert labels.names("en")[index] == en
    assert labels.names("zh")[index] == zh


def test_unknown_language_is_refused():
    with pytest.raises(KeyError, match="available: en, zh"):
        labels.names("fr")


# -- label files ---------------------------------------------------------------------------------


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_text_file_is_one_label_per_line(tmp_path):
    assert labels.read_labels(write(tmp_path, "l.txt", "cat\n dog \n\n\n")) == ["cat", "dog"]
    with pytest.raises(labels.LabelError, match="label 1 is empty"):
        labels.read_labels(write(tmp_path, "gap.txt", "cat\n\ndog\n"))
    with pytest.raises(labels.LabelError, match="no labels"):
        labels.read_labels(write(tmp_path, "none.txt", "\n"))


@pytest.mark.parametrize(
    "content",
    [
        '{"0": "cat", "1": "dog"}',  # TorchServe's index_to_name.json
        '{"1": ["n02084071", "dog"], "0": ["n02121808", "cat"]}',  # [wnid, name], any order
        '["cat", "dog"]',
    ],
)
def test_json_labels_in_each_accepted_shape(tmp_path, content):
    assert labels.read_labels(write(tmp_path, "index_to_name.json", content)) == ["cat", "dog"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"0": "cat", "2": "dog"}', "without gaps; missing \\[1\\]"),
        ('{"zero": "cat"}', "'zero' is not a class index"),
        ('{"0": 5}', "label 0 is 5"),
        ('"cat"', "expected a JSON object"),
        ("{not json", "Expecting property name"),
    ],
)
def test_malformed_json_labels_are_refused_naming_the_problem(tmp_path, content, message):
    with pytest.raises(labels.LabelError, match=message):
        labels.read_labels(write(tmp_path, "bad.json", content))


def test_manifest_labels_old_and_new():
    old = labels.from_manifest({"labels": "imagenet-1k", "num_classes": 1000})
    assert old["en"][281] == "tabby" and old["zh"][281] == "虎斑猫"
    new = labels.from_manifest({"labels": {"en": ["a", "b"]}, "num_classes": 2})
    assert new == {"en": ("a", "b")}
    with pytest.raises(labels.LabelError, match="1 zh labels for 2 classes"):
        labels.from_manifest({"labels": {"en": ["a", "b"], "zh": ["甲"]}, "num_classes": 2})
