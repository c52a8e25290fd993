"""Build the Debian data set: a package's long description (source) -> its one-line synopsis (target).

    apt-get update -o Acquire::Languages=en                   # as root; fetches the Translation-en lists
    python weights/debian_data.py build --out /work/data/debian [--lists /var/lib/apt/lists] [--update]
    python weights/debian_data.py sample --data /work/data/debian --out tests/fixtures/debian --n 200

Input: the `*_i18n_Translation-en*` files of the apt lists directory, deb822 stanzas of `Package:`,
`Description-md5:`, `Description-en:` (first line the synopsis, then the long description, Debian Policy 5.6.13),
and the `*_binary-*_Packages*` files beside them, which name each binary package's source package.

1. one description per package (listed twice with different texts: the smallest (target, source) is kept);
2. entries with an empty long description are dropped;
3. one pair per synopsis, compared case-insensitively with whitespace collapsed: the smallest package name wins;
4. split: sha256 of the family holds out ~2.5% of families as `test_unseen_family`; sha256 of the package name then
   sends the rest 94/3/3 to train/validation/test. The family is `family(source package name)`, or
   `family(binary package name)` for a package no Packages file lists (see `family` and `split_key`).

Output: `{train,validation,test,test_unseen_family}.jsonl` (package/source/target, sorted by package) and
`stats.json`. The same input files give byte-identical outputs: no timestamps, no paths, no salted hashes.
`baseline(source)` is the reference the project compares against: the first sentence cut to 12 words.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

SPLITS = ("train", "validation", "test", "test_unseen_family")
UPDATE_COMMAND = ("apt-get", "update", "-o", "Acquire::Languages=en")
TRANSLATION_FILE = re.compile(r"_i18n_Translation-en(\.(lz4|gz|xz|bz2|zst))?$")  # not Translation-en_GB
PACKAGES_FILE = re.compile(r"_binary-[^_]+_Packages(\.(lz4|gz|xz|bz2|zst))?$")
COMPRESSED = re.compile(r"\.(lz4|gz|xz|bz2|zst)$")
APT_HELPER = "/usr/lib/apt/apt-helper"

HELD_OUT_FAMILIES_PER_MILLE = 25  # 2.5% of families never seen in training
TRAIN_PERCENT, VALIDATION_PERCENT = 94, 3  # the rest (3%) is test


# ---------------------------------------------------------------------------------------------- reading the lists


def find_list_files(lists_dir, pattern):
    """The files of an apt lists directory whose name matches `pattern`, sorted by name."""
    return sorted(p for p in Path(lists_dir).iterdir() if p.is_file() and pattern.search(p.name))


def read_list_file(path):
    """Decompressed text of an apt list file: `apt-helper cat-file` (ships with apt), else `lz4cat`."""
    path = Path(path)
    if not COMPRESSED.search(path.name):
        return path.read_text(encoding="utf-8", errors="replace")
    errors = []
    for command in ([APT_HELPER, "cat-file", str(path)], ["lz4cat", str(path)]):
        if shutil.which(command[0]) is None:
            errors.append(f"{command[0]}: not found")
            continue
        result = subprocess.run(command, capture_output=True)
        if result.returncode == 0:
            return result.stdout.decode("utf-8", errors="replace")
        errors.append(f"{command[0]}: {result.stderr.decode(errors='replace').strip()}")
    raise RuntimeError(f"cannot decompress {path} with `{APT_HELPER} cat-file` (part of apt) or `lz4cat` "
                       f"(Debian package lz4): " + "; ".join(errors))


def parse_translation(text):
    """Yield (package, synopsis, long_lines) per deb822 stanza; long_lines keep their leading space."""
    package, synopsis, long_lines, in_description = None, None, [], False
    for line in text.splitlines() + [""]:
        if not line.strip():
            if package is not None and synopsis is not None:
                yield package, synopsis, long_lines
            package, synopsis, long_lines, in_description = None, None, [], False
        elif line[0] in " \t":
            if in_description:
                long_lines.append(line)
        else:
            field, _, value = line.partition(":")
            in_description = field == "Description-en"
            if field == "Package":
                package = value.strip()
            elif in_description:
                synopsis = " ".join(value.split())


def parse_sources(text):
    """Yield (binary, source) from a Packages file: "Source: foo (1.2-1)" names foo; no Source: the binary itself."""
    for stanza in text.split("\n\n"):
        package = re.search(r"^Package:\s*(\S+)", stanza, re.MULTILINE)
        source = re.search(r"^Source:\s*(\S+)", stanza, re.MULTILINE)
        if package:
            yield package.group(1), (source or package).group(1)


BULLET = re.compile(r"^([*+\-\u2022\u00b7]|o(?=\s))\s+(.*)$")  # "o" counts only in verbatim lines, see below


def description_to_text(long_lines):
    """Plain text of a long description: one line per paragraph or list item, a blank line between paragraphs.

    Wrapped paragraph lines are joined; verbatim lines stay lines; list items ("*", "-", "+", "o", "•") become
    "- item", with a wrapped item's deeper-indented continuation lines joined to it; runs of spaces collapse.
    """
    out, kind, item_indent = [], None, 0  # out: output lines, "" between paragraphs
    for raw in long_lines:
        body = raw[1:] if raw[:1] in " \t" else raw  # drop the deb822 continuation space
        text = " ".join(body.split())
        indent = len(body) - len(body.lstrip())  # 0: wrapped paragraph text, more: verbatim
        bullet = BULLET.match(text)
        if text in ("", "."):
            if out and out[-1]:
                out.append("")
            kind = None
        elif bullet and (indent or bullet.group(1) != "o"):
            out.append("- " + bullet.group(2))
            kind, item_indent = "item", indent
        elif kind == "item" and (indent > item_indent or indent == item_indent == 0):
            out[-1] += " " + text  # a wrapped list item
        elif kind == "text" and indent == 0:
            out[-1] += " " + text  # a wrapped paragraph
        else:
            out.append(text)
            kind = "verbatim" if indent else "text"
    return "\n".join(out).strip()


# ---------------------------------------------------------------------------------------------- pairs


def collect_pairs(stanzas):
    """{package: pair} with one description per package: the smallest (target, source) if it is listed twice."""
    best = {}
    for package, synopsis, long_lines in stanzas:
        pair = {"package": package, "source": description_to_text(long_lines), "target": synopsis}
        old = best.get(package)
        if old is None or (pair["target"], pair["source"]) < (old["target"], old["source"]):
            best[package] = pair
    return best


def synopsis_key(target):
    """What makes two synopses the same: case and whitespace ignored."""
    return " ".join(target.split()).casefold()


def deduplicate(pairs):
    """Pairs with a long description, one per synopsis (the smallest package name wins), sorted by package."""
    kept = {}
    for pair in sorted(pairs, key=lambda p: p["package"]):
        if pair["source"].strip() and pair["target"].strip():
            kept.setdefault(synopsis_key(pair["target"]), pair)
    return sorted(kept.values(), key=lambda p: p["package"])


# ---------------------------------------------------------------------------------------------- family and split

# Ecosystem prefixes, longest first so that "python3-" wins over "python-". Each is stripped (repeatedly), and the
# family is what follows; "golang-" also drops the code host so that the repository owner remains.
PREFIXES = (
    "golang-github-", "golang-gitlab-", "golang-gopkg-", "golang-golang-x-", "golang-",
    "python3-", "python-", "pypy3-", "pypy-", "r-cran-", "r-bioc-", "r-other-", "libghc-", "ghc-", "haskell-",
    "ruby-", "node-", "lua-", "php-", "elpa-", "gir1.2-", "rust-", "fonts-", "lib",
)
# Words that name a kind of package rather than a project: "python3-dev" is Python's, not a family "dev".
GENERIC = frozenset("all bin common dbg dbgsym dev doc examples full minimal src tools utils venv".split())
VERSION_SUFFIX = re.compile(r"\d+[a-z]?$")


def _stem(token):
    """A name token without its trailing version: "foo2" -> "foo", "qt5core5a" -> "qt5core"; "2048" stays."""
    return VERSION_SUFFIX.sub("", token) or token


def family(name):
    """The family of a binary package: siblings that may share a description get the same one.

    Rule: lower-case; strip ecosystem prefixes (PREFIXES, repeatedly, "lib" included); take the first token
    when splitting on "-" and "."; drop its trailing version number ("\\d+[a-z]?"). If that first token, after a
    prefix other than "lib", is a generic word (GENERIC: dev, doc, all, ...) or a bare number, the package is the
    language's own and the prefix is the family.

        libfoo1, libfoo2, libfoo-dev, libfoo1-dbg, foo, foo-utils, foo2.0, python3-foo, python-foo-doc -> "foo"
        0ad, 0ad-data, 0ad-data-common -> "0ad";   libgtk-3-0, libgtk2.0-0, gir1.2-gtk-3.0 -> "gtk"
        golang-github-sirupsen-logrus-dev -> "sirupsen";  python3-dev, python3.11, libpython3-all-dev -> "python"
        golang-1.19-go -> "golang";  libtest-deep-perl, ruby-test-unit -> "test"

    The rule over-groups on purpose (perl's libtest-*-perl are all "test"): a bigger family only moves more
    packages together, while an under-grouped one would leak near-duplicates into the held-out split.
    """
    rest = name.lower()
    stripped = None
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            remainder = rest[len(prefix):]
            if rest.startswith(prefix) and remainder and remainder[0].isalnum():
                stripped, rest, changed = prefix, remainder, True
                break
    first = re.split(r"[-.]", rest)[0]
    if stripped not in (None, "lib") and (first in GENERIC or first.isdigit()):
        return _stem(re.split(r"[-.]", stripped)[0])  # the language's own package: python3-dev, golang-1.19-go
    return _stem(first)


def _hash_fraction(kind, value, modulus):
    """A stable bucket in [0, modulus): sha256, not Python's salted hash()."""
    digest = hashlib.sha256(f"{kind}:{value}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % modulus


def family_is_held_out(family_name):
    return _hash_fraction("family", family_name, 1000) < HELD_OUT_FAMILIES_PER_MILLE


def split_key(package, sources):
    """The family that decides held-out membership: that of the source package when known, else the binary's."""
    return family(sources.get(package, package))


def split_of(package, sources):
    """The split a package belongs to; `sources` maps binary to source package names ({} if unknown)."""
    if family_is_held_out(split_key(package, sources)):
        return "test_unseen_family"
    bucket = _hash_fraction("package", package, 100)
    if bucket < TRAIN_PERCENT:
        return "train"
    return "validation" if bucket < TRAIN_PERCENT + VALIDATION_PERCENT else "test"


def split_pairs(pairs, sources):
    """{split: pairs sorted by package}."""
    splits = {name: [] for name in SPLITS}
    for pair in sorted(pairs, key=lambda p: p["package"]):
        splits[split_of(pair["package"], sources)].append(pair)
    return splits


# ---------------------------------------------------------------------------------------------- baseline


def baseline(source, max_words=12):
    """The trivial summary: the first sentence (ends at ". " or a newline) cut to 12 words, final "." dropped."""
    first = re.split(r"\.\s|\n", source.strip(), maxsplit=1)[0]
    return " ".join(first.split()[:max_words]).rstrip(".")


def _rouge_tokens(text):
    """rouge_score's default tokenisation: lower-case, non-alphanumerics as spaces, no stemming."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _f1(overlap, n_prediction, n_reference):
    return 0.0 if overlap == 0 else 2 * overlap / (n_prediction + n_reference)


def _ngram_f1(prediction, reference, n):
    p = Counter(tuple(prediction[i:i + n]) for i in range(len(prediction) - n + 1))
    r = Counter(tuple(reference[i:i + n]) for i in range(len(reference) - n + 1))
    return _f1(sum((p & r).values()), sum(p.values()), sum(r.values()))


def _lcs_f1(prediction, reference):
    row = [0] * (len(reference) + 1)  # row[j]: LCS of the prediction so far and reference[:j]
    for token in prediction:
        diagonal = 0
        for j, ref_token in enumerate(reference, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if token == ref_token else max(row[j], row[j - 1])
    return _f1(row[-1], len(prediction), len(reference))


def rouge(predictions, references):
    """Mean ROUGE-1/2/L F1 over pairs of strings, as rouge_score computes them (no stemming)."""
    totals = Counter()
    for prediction, reference in zip(predictions, references):
        p, r = _rouge_tokens(prediction), _rouge_tokens(reference)
        totals.update({"rouge1": _ngram_f1(p, r, 1), "rouge2": _ngram_f1(p, r, 2), "rougeL": _lcs_f1(p, r)})
    return {key: round(totals[key] / max(len(predictions), 1), 4) for key in ("rouge1", "rouge2", "rougeL")}


# ---------------------------------------------------------------------------------------------- commands


def run_apt_update():
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise SystemExit(f"--update needs root: run `sudo {' '.join(UPDATE_COMMAND)}`, then build without --update")
    result = subprocess.run(UPDATE_COMMAND)
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(UPDATE_COMMAND)}` failed with exit status {result.returncode}")


def build_splits(files, packages_files=()):
    """Read the lists files and return ({split: pairs}, sources, counts of what was read and dropped)."""
    sources = {}
    for path in packages_files:
        for package, source in parse_sources(read_list_file(path)):
            sources[package] = min(source, sources.get(package, source))  # the same on any file order
    stanzas = [s for path in files for s in parse_translation(read_list_file(path))]
    by_package = collect_pairs(stanzas)
    with_text = [p for p in by_package.values() if p["source"].strip()]
    pairs = deduplicate(with_text)
    counts = {"stanzas": len(stanzas), "packages": len(by_package),
              "empty_long_description": len(by_package) - len(with_text),
              "duplicate_synopsis": len(with_text) - len(pairs), "pairs": len(pairs),
              "pairs_with_known_source": sum(p["package"] in sources for p in pairs)}
    return split_pairs(pairs, sources), sources, counts


def _median_words(pairs, field):
    return float(statistics.median(len(p[field].split()) for p in pairs)) if pairs else 0.0


def write_jsonl(path, pairs):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for pair in pairs:
            row = {"package": pair["package"], "source": pair["source"], "target": pair["target"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build(out_dir, lists_dir="/var/lib/apt/lists", update=False):
    """The `build` command: write the four splits and stats.json; returns the stats."""
    if update:
        run_apt_update()
    files = find_list_files(lists_dir, TRANSLATION_FILE) if Path(lists_dir).is_dir() else []
    if not files:
        raise SystemExit(f"no *_i18n_Translation-en* files in {lists_dir}: run `{' '.join(UPDATE_COMMAND)}` "
                         f"as root first (or pass --update)")
    packages_files = find_list_files(lists_dir, PACKAGES_FILE)
    splits, sources, counts = build_splits(files, packages_files)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, pairs in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", pairs)
    held_out = sorted({split_key(p["package"], sources) for p in splits["test_unseen_family"]})
    stats = {
        "counts": {name: len(pairs) for name, pairs in splits.items()},
        "read": counts,
        "families": len({split_key(p["package"], sources) for pairs in splits.values() for p in pairs}),
        "families_held_out": held_out,
        "lists_files": [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                        for p in files + packages_files],
        "median_words": {name: {"source": _median_words(pairs, "source"), "target": _median_words(pairs, "target")}
                         for name, pairs in splits.items()},
        "baseline": "first sentence of the description cut to 12 words (weights/debian_data.py: baseline)",
        "baseline_rouge_f1": {name: rouge([baseline(p["source"]) for p in pairs], [p["target"] for p in pairs])
                              for name, pairs in splits.items() if name != "train"},
        "split_rule": {"family": "family(source package) from the Packages files, else family(binary package)",
                       "held_out_families_per_mille": HELD_OUT_FAMILIES_PER_MILLE,
                       "train_percent": TRAIN_PERCENT, "validation_percent": VALIDATION_PERCENT},
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    return stats


def sample(data_dir, out_dir, n=200):
    """The `sample` command: n pairs in all, shared equally among the splits and picked by a hash of the package
    name, each split sorted by package; the full data's stats.json goes along as full_stats.json (provenance)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        rows = (data_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        chosen = sorted(rows, key=lambda row: _hash_fraction("sample", json.loads(row)["package"], 2 ** 62))
        chosen = sorted(chosen[:n // len(SPLITS)], key=lambda row: json.loads(row)["package"])
        (out_dir / f"{name}.jsonl").write_text("".join(row + "\n" for row in chosen), encoding="utf-8")
    shutil.copyfile(data_dir / "stats.json", out_dir / "full_stats.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build the splits from apt's Translation-en lists")
    build_parser.add_argument("--out", required=True, help="output directory")
    build_parser.add_argument("--lists", default="/var/lib/apt/lists", help="apt lists directory")
    build_parser.add_argument("--update", action="store_true",
                              help=f"run `{' '.join(UPDATE_COMMAND)}` first (needs root)")
    sample_parser = commands.add_parser("sample", help="write a small deterministic sample of each split")
    sample_parser.add_argument("--data", required=True, help="a directory written by `build`")
    sample_parser.add_argument("--out", required=True, help="where to write the sample")
    sample_parser.add_argument("--n", type=int, default=200, help="pairs in all, shared equally among the splits")
    args = parser.parse_args(argv)
    if args.command == "build":
        start = time.perf_counter()
        stats = build(args.out, args.lists, update=args.update)
        shown = ("counts", "read", "families", "median_words", "baseline_rouge_f1")
        print(json.dumps({key: stats[key] for key in shown}, indent=1))
        print(f"families held out: {len(stats['families_held_out'])}")
        print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    else:
        sample(args.data, args.out, args.n)


if __name__ == "__main__":
    main()
