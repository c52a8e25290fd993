"""models/truecase.py: an uncased model's output given back the capitals, accents and spacing of its source and of
the training targets; only case, accents and spaces change."""
import json
from pathlib import Path

import pytest

from seq2seq.core.errors import InputError
from seq2seq.models.truecase import TRUECASE_FILE, Truecaser, fold, split_words

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debian"

TARGETS = [  # a tiny training set: what the table learns from
    "Pylint plugin for integration with GitLab CI (Python 3)",
    "library for Python and Perl, development files",
    "tool for Python scripts",
    "Library to parse Python",
    "Library of C++ classes",
    "C++ library (development files)",
    "pure Python module (Python 3)",
    "Perl module - documentation",
    "Perl bindings - documentation",
    "server-side tool; data",
    "server-side scripts",
    'utility to quote "words" in text',
    'parser of "words" in text',
    "mathematical tools -- data",
    "puzzle game -- data",
    "bindings to C and Perl",
    "fast, small editor",
    "command-line editor",
]


@pytest.fixture(scope="module")
def table():
    return Truecaser.learn(TARGETS)


def uncased(text):
    """``text`` as an uncased WordPiece model writes it: folded, a space around every mark."""
    return " ".join(word for word, _, _ in split_words(fold(text)))


def test_the_table_holds_only_what_differs_from_lower_case(table):
    assert table.words == {"python": "Python", "perl": "Perl", "c": "C"}  # "GitLab", "CI": seen once, under 2
    assert table.first_words == {"library": "Library"}  # 2 of 3 starts; "Perl" starts as it is written anyway
    assert {("(", "w"), ("w", ")"), ("w", ","), ("+", "+"), ("w", "+"), ("w", "-"), ("-", "w"),
            ('"open', "w"), ("w", '"close'), ("--", "--")} <= table.attached
    assert ("w", "--") not in table.attached and ("w", "(") not in table.attached
    assert table.spaced_hyphens == {"documentation"}  # "server-side" twice: joined; "module", "bindings": once


@pytest.mark.parametrize("output, source, expected", [
    # runs the description contains take its spelling and spacing
    ("pylint plugin for gitlab ci ( python 3 )", "Integrates Pylint with GitLab CI. Built for (Python 3) only.",
     "Pylint plugin for GitLab CI (Python 3)"),
    ("client for the asterisk manager interface", "A client for the Asterisk Manager Interface.",
     "client for the Asterisk Manager Interface"),
    ("server - side support", "It adds server-side support.", "server-side support"),
    ("utilities for node. js", "Tools written for Node.js, the server-side JavaScript engine.",
     "utilities for Node.js"),
    ("node. js utilities", "Node.js is a JavaScript engine.", "node.js utilities"),  # a run's spacing, not its
    # sentence-start capital
    ("cafe manager", "A manager for the Café chain.", "Café manager"),  # accents come back
    # one word: its most common spelling in the description; a sentence-start capital is no evidence
    ("penlight library for lua", "Penlight is a set of pure Lua libraries. Penlight is small.",
     "penlight library for Lua"),
    ("gnome shell extension", "GNOME is a desktop.", "GNOME shell extension"),  # other capitals are evidence
    ("library for foo", "Library for foo, written in foo.", "Library for foo"),  # first word: the table's habit
])
def test_source_spellings(table, output, source, expected):
    assert table(output, source) == expected


@pytest.mark.parametrize("output, expected", [
    ("c + + library ( development files )", "C++ library (development files)"),
    ("tool for python, perl and c", "tool for Python, Perl and C"),
    ("perl module - documentation", "Perl module - documentation"),  # a hyphen "documentation" is spaced from
    ("client - side library", "client-side library"),  # the usual hyphen joins
    ("space game - - data", "space game -- data"),  # a double hyphen is spaced
    ('parse " words " here', 'parse "words" here'),  # opening and closing quotes attach inward
    ("library for python", "Library for Python"),  # first word: first_words
    ("python module", "Python module"),  # first word not in first_words: words
    ("unknown words stay as written", "unknown words stay as written"),  # no source, no table entry
])
def test_table_spellings_and_spacing_without_a_source(table, output, expected):
    assert table(output) == expected
    assert table(output, "An unrelated description of nothing in particular.") == expected


@pytest.mark.parametrize("output", ["", "   ", "\n"])
def test_empty_output_stays_empty(table, output):
    assert table(output, "Some description.") == ""


def test_an_empty_table_copies_the_source_only():
    plain = Truecaser()
    assert plain("python module for gitlab ci", "Talks to GitLab CI.") == "python module for GitLab CI"
    assert plain("c + + ( x )") == "c + + ( x )"  # no spacing learned: WordPiece's spaces stay


def test_only_case_accents_and_spaces_change(table):
    """Over the fixture pairs: the restored text folds back to the words the model wrote, in order."""
    rows = [json.loads(line) for line in (FIXTURES / "test.jsonl").read_text().splitlines()]
    for row in rows:
        output = uncased(row["target"])  # the synopsis as the model would write it
        restored = table(output, row["source"])
        assert [fold(w) for w, _, _ in split_words(restored)] == output.split()
        assert "  " not in restored and restored == restored.strip()


def test_learning_from_the_fixture_synopses_restores_more_of_them():
    rows = [json.loads(line) for line in (FIXTURES / "train.jsonl").read_text().splitlines()]
    table = Truecaser.learn(r["target"] for r in rows)
    held_out = [json.loads(line) for line in (FIXTURES / "validation.jsonl").read_text().splitlines()]
    exact = sum(table(uncased(r["target"]), r["source"]) == r["target"] for r in held_out)
    lower = sum(uncased(r["target"]) == r["target"] for r in held_out)
    assert exact > lower + 10, (exact, lower)


def test_ties_prefer_lower_case_and_min_count_applies():
    table = Truecaser.learn(["tool for Gtk", "tool for gtk", "x Qt", "y Qt", "z Zz"], min_count=2)
    assert table.words == {"qt": "Qt"}  # Gtk/gtk tied: lower case; Zz seen once
    assert Truecaser.learn(["x Zz"], min_count=1).words == {"zz": "Zz"}


def test_save_and_load(table, tmp_path):
    table.save_pretrained(tmp_path)
    loaded = Truecaser.from_pretrained(tmp_path)
    assert loaded.to_dict() == table.to_dict()
    assert loaded("c + + library ( development files )") == "C++ library (development files)"


def test_a_folder_without_a_table_gives_none(tmp_path):
    assert Truecaser.from_pretrained(tmp_path) is None


def test_a_bad_table_is_an_input_error(tmp_path):
    (tmp_path / TRUECASE_FILE).write_text(json.dumps({"words": {}, "spelling": {}}))
    with pytest.raises(InputError, match="spelling"):
        Truecaser.from_pretrained(tmp_path)
    (tmp_path / TRUECASE_FILE).write_text("{not json")
    with pytest.raises(InputError, match=TRUECASE_FILE):
        Truecaser.from_pretrained(tmp_path)
