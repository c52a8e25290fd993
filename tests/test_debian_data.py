"""The Debian data builder (weights/debian_data.py): parsing, de-duplication, the family rule, the split, the
baseline, and the committed sample in tests/fixtures/debian. No network and no apt-get: the lists are written here."""
import importlib.util
import json
import pathlib
import random
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "fixtures" / "debian"
_spec = importlib.util.spec_from_file_location("debian_data", ROOT / "weights" / "debian_data.py")
dd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dd)

MAIN = """\
Package: foo
Description-md5: 0123
Description-en: Frobnicate the widgets
 Foo frobnicates widgets. It is fast
 and small.
 .
 Features:
  * one feature that is long and
    wraps onto a second line
  * two
 .
 Verbatim:
    $ foo   --bar
 .
 Single-space list:
 - alpha
 - beta

Package: libfoo-dev
Description-md5: 4567
Description-en: frobnicate   the WIDGETS
 Development files for foo.

Package: empty-long
Description-md5: 89ab
Description-en: A package with no long description

Package: bar
Description-md5: cdef
Description-en: bar tool
 Bar does things. It also
 o rather: more things.
  o an o-bullet item
"""
UPDATES = """\
Package: foo
Description-md5: 9999
Description-en: Frobnicate the widgets, updated
 A newer text.
"""
PACKAGES = """\
Package: foo
Source: foo-src (1.0-1)
Version: 1.0-1+b1

Package: bar
Version: 2
"""
FOO_TEXT = ("Foo frobnicates widgets. It is fast and small.\n\nFeatures:\n"
            "- one feature that is long and wraps onto a second line\n- two\n\n"
            "Verbatim:\n$ foo --bar\n\nSingle-space list:\n- alpha\n- beta")


# ---- parsing -------------------------------------------------------------------------------------------------------

def test_parse_translation_stanzas():
    stanzas = list(dd.parse_translation(MAIN))
    assert [(p, s) for p, s, _ in stanzas] == [
        ("foo", "Frobnicate the widgets"), ("libfoo-dev", "frobnicate the WIDGETS"),
        ("empty-long", "A package with no long description"), ("bar", "bar tool")]
    assert stanzas[2][2] == []
    assert stanzas[1][2] == [" Development files for foo."]


def test_description_to_text_paragraphs_lists_and_verbatim():
    texts = {p: dd.description_to_text(lines) for p, _, lines in dd.parse_translation(MAIN)}
    assert texts["foo"] == FOO_TEXT
    # "o" is a bullet only in a verbatim (indented) line; at paragraph level it is a word
    assert texts["bar"] == "Bar does things. It also o rather: more things.\n- an o-bullet item"
    assert texts["empty-long"] == ""


def test_parse_sources():
    assert list(dd.parse_sources(PACKAGES)) == [("foo", "foo-src"), ("bar", "bar")]


def _lz4_compress(text, path):
    subprocess.run(["lz4", "-q", "-z", "-f", "-", str(path)], input=text.encode(), check=True)


needs_lz4 = pytest.mark.skipif(shutil.which("lz4") is None, reason="the lz4 program is not installed")


def test_read_plain_list_file(tmp_path):
    path = tmp_path / "x_main_i18n_Translation-en"
    path.write_text(MAIN, encoding="utf-8")
    assert dd.read_list_file(path) == MAIN


@needs_lz4
@pytest.mark.parametrize("decompressor", ["apt-helper", "lz4cat"])
def test_read_lz4_list_file(tmp_path, monkeypatch, decompressor):
    if decompressor == "apt-helper" and shutil.which(dd.APT_HELPER) is None:
        pytest.skip("apt-helper is not installed")
    if decompressor == "lz4cat":
        if shutil.which("lz4cat") is None:
            pytest.skip("lz4cat is not installed")
        monkeypatch.setattr(dd, "APT_HELPER", str(tmp_path / "no-apt-helper"))
    path = tmp_path / "x_main_i18n_Translation-en.lz4"
    _lz4_compress(MAIN, path)
    assert dd.read_list_file(path) == MAIN


def test_read_compressed_without_any_decompressor_names_both(tmp_path, monkeypatch):
    path = tmp_path / "x_main_i18n_Translation-en.lz4"
    path.write_bytes(b"not really lz4")
    monkeypatch.setattr(dd, "APT_HELPER", str(tmp_path / "no-apt-helper"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-helper.*lz4cat"):
        dd.read_list_file(path)


# ---- pairs -----------------------------------------------------------------------------------------------------

def test_one_description_per_package_whatever_the_file_order():
    main, updates = list(dd.parse_translation(MAIN)), list(dd.parse_translation(UPDATES))
    for stanzas in (main + updates, updates + main):
        assert dd.collect_pairs(stanzas)["foo"]["target"] == "Frobnicate the widgets"


def test_deduplicate_on_synopsis_smallest_package_wins():
    pairs = [{"package": "zlib-doc", "source": "z", "target": "Compression  LIBRARY"},
             {"package": "libz", "source": "l", "target": "compression library"},
             {"package": "gzip", "source": "g", "target": "compression utility"},
             {"package": "no-text", "source": " ", "target": "has no long description"}]
    assert [p["package"] for p in dd.deduplicate(pairs)] == ["gzip", "libz"]
    assert dd.deduplicate(pairs[::-1]) == dd.deduplicate(pairs)


# ---- family and split -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("names, expected", [
    ("libfoo1 libfoo2 libfoo-dev libfoo1-dbg foo foo-utils foo-common foo-data foo2.0 python3-foo python-foo-doc "
     "pypy3-foo ruby-foo node-foo r-cran-foo libghc-foo-dev librust-foo-dev golang-foo-dev", "foo"),
    ("0ad 0ad-data 0ad-data-common", "0ad"),
    ("libgtk-3-0 libgtk2.0-0 libgtk-3-dev gir1.2-gtk-3.0 gtk2.0-examples", "gtk"),
    ("golang-github-sirupsen-logrus-dev golang-github-sirupsen-other-dev", "sirupsen"),
    ("python3-dev python3.11 python3.11-minimal libpython3-all-dev python3-all", "python"),
    ("golang-1.19-go golang-1.19-doc", "golang"),
    ("libtest-deep-perl libtest-simple-perl ruby-test-unit", "test"),
    ("python3-pyqt5 python3-pyqt5.qtsvg pyqt5-dev-tools", "pyqt"),
    ("2048 2048-qt", "2048"),
])
def test_family_examples(names, expected):
    assert {name: dd.family(name) for name in names.split()} == {name: expected for name in names.split()}


def test_family_keeps_unrelated_projects_apart():
    assert len({dd.family(n) for n in ["bash", "coreutils", "gzip", "python3-numpy", "libssl3", "vim"]}) == 6


def test_hashes_are_pinned():
    """sha256 buckets, not Python's salted hash(): these numbers hold in every process and on every machine."""
    assert [dd._hash_fraction("family", f, 1000) for f in ["foo", "bash", "gtk"]] == [267, 569, 572]
    held = [f"fam{i}" for i in range(200) if dd.family_is_held_out(f"fam{i}")]
    assert held == ["fam21", "fam125", "fam170", "fam197"]


def _synthetic_pairs(n_families=3000):
    names = []
    for i in range(n_families):
        stem = f"proj{chr(97 + i % 26)}{i}x"
        names += [stem, f"lib{stem}1", f"lib{stem}-dev", f"{stem}-doc", f"python3-{stem}"][: 1 + i % 5]
    return [{"package": n, "source": f"text of {n}", "target": f"synopsis of {n}"} for n in names]


def test_split_is_deterministic_disjoint_and_keeps_families_together():
    pairs = _synthetic_pairs()
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    splits = dd.split_pairs(pairs, {})
    assert splits == dd.split_pairs(shuffled, {})
    packages = [p["package"] for split in splits.values() for p in split]
    assert len(packages) == len(set(packages)) == len(pairs)
    families = {name: {dd.family(p["package"]) for p in split} for name, split in splits.items()}
    held = families["test_unseen_family"]
    assert held and all(not (held & families[name]) for name in ("train", "validation", "test"))
    assert 0.01 < len(held) / len(set().union(*families.values())) < 0.04
    sizes = {name: len(split) for name, split in splits.items()}
    in_distribution = len(pairs) - sizes["test_unseen_family"]
    assert 0.92 < sizes["train"] / in_distribution < 0.96
    for split in splits.values():
        assert [p["package"] for p in split] == sorted(p["package"] for p in split)


def test_known_source_package_decides_the_family():
    """Siblings whose names share nothing still travel together when a Packages file names their source."""
    held = next(f"src{i}xy" for i in range(1000) if dd.family_is_held_out(f"src{i}xy"))
    assert dd.family(held) == held
    sources = {"unrelated-name": held, "gir1.2-other-1.0": held}
    assert {dd.split_of(n, sources) for n in ["unrelated-name", "gir1.2-other-1.0", held]} == {"test_unseen_family"}


# ---- baseline ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, expected", [
    ("Foo frobnicates widgets. It is fast.", "Foo frobnicates widgets"),
    ("one two three four five six seven eight nine ten eleven twelve thirteen. x",
     "one two three four five six seven eight nine ten eleven twelve"),
    ("Short line\nsecond line", "Short line"),
    ("  Ends with a full stop.", "Ends with a full stop"),
    ("Uses e.g. foo", "Uses e.g"),
    (FOO_TEXT, "Foo frobnicates widgets"),
])
def test_baseline(source, expected):
    assert dd.baseline(source) == expected


def test_rouge_hand_computed():
    assert dd.rouge(["the cat sat"], ["the cat sat"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    # F1 = 2 * overlap / (len(prediction) + len(reference)): unigrams 2 of 3 and 4 -> 4/7; bigrams "the cat",
    # 1 of 2 and 3 -> 2/5; longest common subsequence "the cat", 2 -> 4/7
    assert dd.rouge(["the cat sat"], ["The cat, on mat"]) == {"rouge1": round(4 / 7, 4), "rouge2": 0.4,
                                                              "rougeL": round(4 / 7, 4)}
    assert dd.rouge(["a b"], ["c d"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    predictions = ["the quick brown fox", "library for parsing json", "tool", "Python 3 bindings for GTK"]
    references = ["quick brown fox jumps", "JSON parsing library for C", "command-line tool", "GTK bindings (Python 3)"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    expected = {key: round(sum(scorer.score(r, p)[key].fmeasure for p, r in zip(predictions, references)) / 4, 4)
                for key in ("rouge1", "rouge2", "rougeL")}
    assert dd.rouge(predictions, references) == expected


# ---- the build command -------------------------------------------------------------------------------------------

def _lists_dir(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "example.org_debian_dists_x_main_i18n_Translation-en").write_text(MAIN, encoding="utf-8")
    updates = lists / "example.org_debian_dists_x-updates_main_i18n_Translation-en"
    if shutil.which("lz4"):
        _lz4_compress(UPDATES, updates.with_name(updates.name + ".lz4"))
    else:
        updates.write_text(UPDATES, encoding="utf-8")
    (lists / "example.org_debian_dists_x_main_binary-amd64_Packages").write_text(PACKAGES, encoding="utf-8")
    for ignored in ("example.org_debian_dists_x_main_i18n_Translation-de", "x_main_i18n_Translation-en_GB"):
        (lists / ignored).write_text("Package: ignored\nDescription-en: ignored\n text\n", encoding="utf-8")
    return lists


def test_build_writes_identical_outputs_twice(tmp_path):
    lists = _lists_dir(tmp_path)
    stats = dd.build(tmp_path / "a", lists)
    dd.main(["build", "--out", str(tmp_path / "b"), "--lists", str(lists)])
    for name in [f"{s}.jsonl" for s in dd.SPLITS] + ["stats.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rows = [json.loads(line) for s in dd.SPLITS for line in (tmp_path / "a" / f"{s}.jsonl").open(encoding="utf-8")]
    assert sorted(r["package"] for r in rows) == ["bar", "foo"]  # libfoo-dev: a duplicate synopsis of foo
    foo = next(r for r in rows if r["package"] == "foo")
    assert foo == {"package": "foo", "source": FOO_TEXT, "target": "Frobnicate the widgets"}
    assert stats["read"] == {"stanzas": 5, "packages": 4, "empty_long_description": 1, "duplicate_synopsis": 1,
                             "pairs": 2, "pairs_with_known_source": 2}
    assert len(stats["lists_files"]) == 3 and all(len(f["sha256"]) == 64 for f in stats["lists_files"])


def test_build_without_lists_names_the_command(tmp_path):
    with pytest.raises(SystemExit, match="apt-get update -o Acquire::Languages=en"):
        dd.build(tmp_path / "out", tmp_path)


def test_update_needs_root(monkeypatch):
    monkeypatch.setattr(dd.os, "geteuid", lambda: 1000, raising=False)
    with pytest.raises(SystemExit, match="needs root"):
        dd.run_apt_update()


def test_sample_is_deterministic(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in dd.SPLITS:
        dd.write_jsonl(data / f"{name}.jsonl", _synthetic_pairs(40))
    (data / "stats.json").write_text("{}\n", encoding="utf-8")
    dd.sample(data, tmp_path / "s1", n=20)
    dd.sample(data, tmp_path / "s2", n=20)
    for name in dd.SPLITS:
        lines = (tmp_path / "s1" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 5 and lines == (tmp_path / "s2" / f"{name}.jsonl").read_text().splitlines()


# ---- the committed sample ----------------------------------------------------------------------------------------

def test_committed_sample_is_valid_and_disjoint():
    seen = {}
    total_bytes = 0
    for name in dd.SPLITS:
        path = SAMPLE / f"{name}.jsonl"
        total_bytes += path.stat().st_size
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert rows, name
        for row in rows:
            assert list(row) == ["package", "source", "target"]
            assert all(isinstance(v, str) and v.strip() for v in row.values())
            assert row["package"] not in seen, f"{row['package']} in {name} and {seen.get(row['package'])}"
            seen[row["package"]] = name
        assert [r["package"] for r in rows] == sorted(r["package"] for r in rows)
    assert total_bytes < 300_000
    stats = json.loads((SAMPLE / "full_stats.json").read_text(encoding="utf-8"))
    assert set(stats["counts"]) == set(dd.SPLITS)
    assert (SAMPLE / "README.md").exists()
