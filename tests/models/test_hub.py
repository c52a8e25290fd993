"""Hub ids (models/hub.py): ``from_pretrained("org/name")`` reads huggingface_hub's cache, offline.

No test touches the network. Each builds a Hub cache laid out file for file as huggingface_hub lays out a download
(``models--org--name/{blobs,refs,snapshots}``, documented in its "Understand caching" guide), checks that
huggingface_hub itself (and transformers, the oracle) reads that layout, then loads from it with ``HF_HUB_OFFLINE=1``
and compares with the same folder loaded directly.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import constants, errors
from oracle import bert_config, hf_bert2bert, hf_forward, load_hf, save_hf, transformers
from oracle import one_torch_thread  # noqa: F401

import seq2seq
from seq2seq import CheckpointNotFoundError, EncoderDecoderModel, Tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
GPT2_DIR = REPO / "tests" / "fixtures" / "gpt2"
IDS = np.array([[5, 9, 14, 20, 3, 7], [8, 8, 31, 2, 0, 0]])
MASK = (IDS != 0).astype(np.int64)
DECODER_IDS = np.array([[2, 11, 12, 40], [2, 6, 6, 6]])
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "tower", "is", "in", "paris", "tall", "a", "free",
         "system", "debian", "##s", "##ing", ".", ","] + [f"w{i}" for i in range(42)]  # 61 ids: the oracle's vocab


def publish(cache, repo_id, folder, *, branch="main", skip=()):
    """Put ``folder``'s files into ``cache`` as huggingface_hub stores a download of ``repo_id`` at ``branch``:
    ``blobs/<etag>`` (sha256 for LFS files such as weights, the git blob sha1 for small text files),
    ``snapshots/<commit>/<name>`` a relative symlink to its blob, ``refs/<branch>`` the commit. Returns the commit."""
    root = pathlib.Path(cache) / f"models--{repo_id.replace('/', '--')}"
    names = sorted(n for n in os.listdir(folder) if n not in skip)
    contents = {name: (pathlib.Path(folder) / name).read_bytes() for name in names}
    commit = hashlib.sha1(repr((repo_id, branch, sorted(contents.items()))).encode()).hexdigest()
    for name, data in contents.items():
        lfs = name.endswith((".safetensors", ".bin"))
        etag = hashlib.sha256(data).hexdigest() if lfs else \
            hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / etag).write_bytes(data)
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(pathlib.Path("..", "..", "blobs", etag))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / branch).write_text(commit)  # no newline, as huggingface_hub writes it
    return commit


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache; huggingface_hub reads the variable at import, so its constant too."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def write_vocab(path):
    os.makedirs(path, exist_ok=True)
    (pathlib.Path(path) / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    (pathlib.Path(path) / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A random transformers bert2bert saved by transformers, a WordPiece vocabulary and a generation config."""
    path = tmp_path_factory.mktemp("hf-bert2bert")
    model = hf_bert2bert(spread=3.0)
    model.generation_config.num_beams, model.generation_config.max_length = 3, 9
    save_hf(model, path)
    write_vocab(path)
    return path


def logits(model):
    return model(IDS, attention_mask=MASK, decoder_input_ids=DECODER_IDS).logits


def test_huggingface_hub_itself_reads_the_hand_made_cache(offline, hf_folder):
    commit = publish(offline, "org/name", hf_folder)
    snapshot = offline / "models--org--name" / "snapshots" / commit
    found = huggingface_hub.try_to_load_from_cache("org/name", "config.json", cache_dir=offline)
    assert found == str(snapshot / "config.json")
    assert huggingface_hub.snapshot_download("org/name", cache_dir=offline, local_files_only=True) == str(snapshot)
    assert huggingface_hub.hf_hub_download("org/name", "model.safetensors", cache_dir=offline) == \
        str(snapshot / "model.safetensors")


def test_a_model_from_an_id_equals_the_model_from_its_folder(offline, hf_folder):
    publish(offline, "org/name", hf_folder)
    ours = EncoderDecoderModel.from_pretrained("org/name", cache_dir=offline)
    np.testing.assert_array_equal(logits(ours), logits(EncoderDecoderModel.from_pretrained(hf_folder)))
    assert (ours.generation_config.num_beams, ours.generation_config.max_length) == (3, 9)  # generation_config.json
    # the oracle reads the same cache: the layout is huggingface_hub's, not one only we understand
    ref = load_hf("org/name", cache_dir=str(offline), local_files_only=True)
    np.testing.assert_allclose(logits(ours), hf_forward(ref, IDS, MASK, decoder_input_ids=DECODER_IDS).logits.numpy(),
                               atol=1e-4, rtol=1e-4)


def test_the_default_cache_is_hf_hub_cache(offline, hf_folder, monkeypatch):
    publish(offline, "org/name", hf_folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(offline))  # what HF_HUB_CACHE sets at import
    np.testing.assert_array_equal(logits(EncoderDecoderModel.from_pretrained("org/name")),
                                  logits(EncoderDecoderModel.from_pretrained(hf_folder)))


def test_a_sharded_checkpoint_brings_its_shards(offline, hf_folder, tmp_path):
    model = EncoderDecoderModel.from_pretrained(hf_folder)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size=40_000)
    assert len(list(sharded.glob("model-*.safetensors"))) > 2 and not (sharded / "model.safetensors").exists()
    publish(offline, "org/sharded", sharded)
    np.testing.assert_array_equal(logits(EncoderDecoderModel.from_pretrained("org/sharded", cache_dir=offline)),
                                  logits(model))


def test_a_tokenizer_from_an_id_equals_the_tokenizer_from_its_folder(offline, hf_folder):
    publish(offline, "org/name", hf_folder)
    texts = ["the tower is in paris.", "debian, a free system w7 w40"]
    ours, folder = Tokenizer.from_pretrained("org/name", cache_dir=offline), Tokenizer.from_pretrained(hf_folder)
    np.testing.assert_array_equal(ours(texts)["input_ids"], folder(texts)["input_ids"])
    assert ours.cls_token_id == 2 and ours.decode(folder(texts)["input_ids"][0]) == "the tower is in paris."
    publish(offline, "openai/gpt2-vocab", GPT2_DIR, skip=("README.md",))  # vocab.json + merges.txt, fetched as a pair
    gpt2 = Tokenizer.from_pretrained("openai/gpt2-vocab", cache_dir=offline)
    assert gpt2("Hello world")["input_ids"].tolist() == [[15496, 995]]


def test_a_warm_start_from_two_ids(offline, tmp_path):
    transformers.set_seed(0)
    encoder = transformers.BertModel(bert_config())
    decoder = transformers.BertLMHeadModel(bert_config(is_decoder=True))
    folders = save_hf(encoder, tmp_path / "enc"), save_hf(decoder, tmp_path / "dec")
    publish(offline, "org/encoder", folders[0])
    publish(offline, "org/decoder", folders[1])
    publish(offline, "org/decoder", folders[0], branch="other")  # a revision the test must not pick
    with pytest.warns(UserWarning, match="newly initialized"):  # the cross-attention, as from folders
        from_ids = EncoderDecoderModel.from_encoder_decoder_pretrained(
            "org/encoder", "org/decoder", encoder_cache_dir=offline, decoder_cache_dir=offline,
            decoder_revision="main")
        from_folders = EncoderDecoderModel.from_encoder_decoder_pretrained(*folders)
    for model in (from_ids, from_folders):
        model.config.decoder_start_token_id, model.config.pad_token_id = 2, 0
    np.testing.assert_array_equal(logits(from_ids), logits(from_folders))


def test_revision_is_a_branch_or_a_commit(offline, hf_folder, tmp_path):
    v1 = EncoderDecoderModel.from_pretrained(hf_folder)
    v2 = EncoderDecoderModel(v1.config, seed=7)
    v2.save_pretrained(tmp_path / "v2")
    first = publish(offline, "org/name", hf_folder)
    publish(offline, "org/name", tmp_path / "v2", branch="v2")
    load = lambda revision: logits(EncoderDecoderModel.from_pretrained(  # noqa: E731
        "org/name", revision=revision, cache_dir=offline))
    np.testing.assert_array_equal(load("v2"), logits(v2))
    np.testing.assert_array_equal(load(first), logits(v1))
    np.testing.assert_array_equal(load(None), logits(v1))  # main
    with pytest.raises(CheckpointNotFoundError, match=r"'org/name' \(revision 'v3'\).*config.json"):
        load("v3")


def test_a_missing_repo_or_file_is_a_checkpoint_not_found_error(offline, hf_folder):
    with pytest.raises(CheckpointNotFoundError, match=r"'org/nothing' \(revision 'main'\) has no config.json.*"
                                                      r"HF_HUB_OFFLINE=1") as caught:
        EncoderDecoderModel.from_pretrained("org/nothing", cache_dir=offline)
    assert str(offline) in str(caught.value) and isinstance(caught.value, FileNotFoundError)
    publish(offline, "org/no-weights", hf_folder, skip=("model.safetensors",))
    with pytest.raises(CheckpointNotFoundError, match=r"'org/no-weights' \(revision 'main'\) has no "
                                                      r"model.safetensors or model.safetensors.index.json"):
        EncoderDecoderModel.from_pretrained("org/no-weights", cache_dir=offline)
    publish(offline, "org/no-vocab", hf_folder, skip=("vocab.txt",))
    with pytest.raises(CheckpointNotFoundError, match="has no tokenizer.json or vocab.txt or vocab.json [+] merges"):
        Tokenizer.from_pretrained("org/no-vocab", cache_dir=offline)


def test_a_repo_with_only_a_pickle_is_refused_and_says_why(offline, hf_folder, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(hf_folder / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not opened")
    publish(offline, "org/pickled", pickled)
    with pytest.raises(CheckpointNotFoundError, match="only pytorch_model.bin; pickle-based checkpoints .* refused"):
        EncoderDecoderModel.from_pretrained("org/pickled", cache_dir=offline)


@pytest.fixture
def online(monkeypatch, tmp_path):
    """huggingface_hub online, simulated (no test touches the network): ``hf_hub_download`` serves files from a
    hand-made cache as if it had just downloaded them there, and answers as the Hub does when the repo, the revision
    or the file is not there; ``file_exists`` looks without downloading. Returns (cache, the files asked for)."""
    httpx2 = pytest.importorskip("httpx2")  # huggingface_hub's HTTP client: its errors carry a response
    cache, asked, real = tmp_path / "online-cache", [], huggingface_hub.hf_hub_download
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def download(repo_id, filename, *, revision=None, cache_dir=None):
        asked.append(filename)
        response = httpx2.Response(404, request=httpx2.Request("HEAD", f"https://hf.co/{repo_id}/{filename}"))
        repo = pathlib.Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        if not repo.is_dir():
            raise errors.RepositoryNotFoundError("404: no such repo", response=response)
        if not ((repo / "refs" / revision).is_file() or (repo / "snapshots" / revision).is_dir()):
            raise errors.RevisionNotFoundError("404: no such revision", response=response)
        try:
            return real(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True)
        except errors.LocalEntryNotFoundError:
            raise errors.RemoteEntryNotFoundError("404: no such file", response=response) from None

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "file_exists", lambda repo_id, filename, *, revision: isinstance(
        huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision), str))
    return cache, asked


def test_online_only_the_files_a_loader_reads_are_fetched_and_the_hubs_answers_are_clear(online, hf_folder, tmp_path):
    cache, asked = online
    publish(cache, "org/name", hf_folder)
    np.testing.assert_array_equal(logits(EncoderDecoderModel.from_pretrained("org/name", cache_dir=cache)),
                                  logits(EncoderDecoderModel.from_pretrained(hf_folder)))
    assert asked == ["config.json", "model.safetensors", "generation_config.json"]
    asked.clear()
    Tokenizer.from_pretrained("org/name", cache_dir=cache)
    assert asked == ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
    with pytest.raises(CheckpointNotFoundError, match="'org/gone' is neither a local directory nor a Hub repo"):
        EncoderDecoderModel.from_pretrained("org/gone", cache_dir=cache)
    with pytest.raises(CheckpointNotFoundError, match="'org/name' has no revision 'v3'"):
        EncoderDecoderModel.from_pretrained("org/name", revision="v3", cache_dir=cache)
    publish(cache, "org/bare", hf_folder, skip=("config.json",))
    with pytest.raises(CheckpointNotFoundError, match=r"'org/bare' \(revision 'main'\) has no config.json$"):
        EncoderDecoderModel.from_pretrained("org/bare", cache_dir=cache)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(hf_folder / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not opened")
    publish(cache, "org/pickled", pickled)
    asked.clear()
    with pytest.raises(CheckpointNotFoundError, match="only pytorch_model.bin; pickle-based"):
        EncoderDecoderModel.from_pretrained("org/pickled", cache_dir=cache)
    assert "pytorch_model.bin" not in asked  # looked for, never fetched


def test_a_local_folder_wins_and_paths_are_never_ids(offline, hf_folder, tmp_path, monkeypatch):
    other = EncoderDecoderModel(EncoderDecoderModel.from_pretrained(hf_folder).config, seed=3)
    other.save_pretrained(tmp_path / "org" / "name")
    publish(offline, "org/name", hf_folder)
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(logits(EncoderDecoderModel.from_pretrained("org/name", cache_dir=offline)),
                                  logits(other))
    for missing in (tmp_path / "org" / "gone", pathlib.Path("org2/name"), "./org2/name", "/no/such/dir"):
        with pytest.raises(CheckpointNotFoundError, match="does not exist"):  # the loaders' own local errors
            EncoderDecoderModel.from_pretrained(missing, cache_dir=offline)


def test_the_command_line_takes_ids_from_hf_hub_cache(tmp_path, hf_folder):
    cache = tmp_path / "cache"
    publish(cache, "org/name", hf_folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = lambda *args: subprocess.run([sys.executable, "-m", "seq2seq", "generate", *args],  # noqa: E731
                                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    by_id, by_folder = run("--model", "org/name", "--max-new-tokens", "4", "the tower"), \
        run("--model", str(hf_folder), "--max-new-tokens", "4", "the tower")
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout == by_folder.stdout and by_id.stdout.strip()
    missing = run("--model", "org/missing", "the tower")
    assert missing.returncode == 1 and "error: " in missing.stderr and "'org/missing'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_hub_ids_are_documented_where_users_look():
    assert "Hub id" in EncoderDecoderModel.from_pretrained.__doc__ and "Hub id" in Tokenizer.from_pretrained.__doc__
    assert seq2seq.models.hub.is_hub_id("org/name") and not seq2seq.models.hub.is_hub_id(pathlib.Path("org/name"))
