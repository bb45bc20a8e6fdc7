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
