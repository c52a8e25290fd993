"""Hub ids -> local folders: ``from_pretrained("org/name")`` through huggingface_hub and its cache.

    folder = resolve("org/name", files=MODEL_FILES, revision=None, cache_dir=None)
    # ~/.cache/huggingface/hub/models--org--name/snapshots/<commit>/ holding config.json, model.safetensors, ...

The loaders read local folders only; the entry points (``EncoderDecoderModel.from_pretrained``,
``from_encoder_decoder_pretrained``, ``Tokenizer.from_pretrained``) call ``resolve`` once and hand its folder on.
A path that exists is used as it is (as transformers does, a local folder wins over a Hub id of the same name);
a ``str`` that is not a path but is a valid repo id (``"org/name"``, ``"name"``) names a Hub repo.

Only the files a loader reads are fetched, each with ``huggingface_hub.hf_hub_download``, which downloads into the
Hub cache (``HF_HUB_CACHE`` or ``cache_dir``) when online and reads that cache when offline (``HF_HUB_OFFLINE=1``)
or unreachable. Each file is a ``Wanted``: the first of its alternatives the repo has, optional or not; an index
(``*.index.json``) brings the shards its ``weight_map`` lists. All files come from one commit: the first file's
snapshot pins the revision for the rest, so a branch that moves meanwhile cannot mix two versions.

Pickle files are never fetched: a repo that offers only ``pytorch_model.bin`` gets an error saying why.
Errors are ``CheckpointNotFoundError`` naming the id, the revision and the file.
"""
import dataclasses
import os

from ..core.config import read_json
from ..core.errors import CheckpointError, CheckpointNotFoundError
from .checkpoint import INDEX_FILE, PICKLE_REASON, SINGLE_FILE


@dataclasses.dataclass(frozen=True)
class Wanted:
    """One file a loader reads: the first of ``choices`` the repo has, each choice a tuple of names fetched together
    (GPT-2's vocab.json + merges.txt). ``refused`` names files that would do but are never fetched (pickles): the
    error names them when the repo has nothing else."""

    choices: tuple
    optional: bool = False
    refused: tuple = ()


# What EncoderDecoderModel.from_pretrained reads; a warm start reads the first two only.
MODEL_FILES = (
    Wanted((("config.json",),)),
    Wanted(((SINGLE_FILE,), (INDEX_FILE,)), refused=("pytorch_model.bin", "pytorch_model.bin.index.json")),
    Wanted((("generation_config.json",),), optional=True),
)


def is_hub_id(path_or_id):
    """True when ``path_or_id`` names a Hub repo: a ``str`` that is no existing path and is a valid repo id."""
    if not isinstance(path_or_id, str) or os.path.exists(path_or_id):
        return False  # a Path object, or anything on disk, is a local folder
    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415 - only ids need huggingface_hub
    from huggingface_hub.utils import validate_repo_id  # noqa: PLC0415
    try:
        validate_repo_id(path_or_id)
    except HFValidationError:
        return False
    return True


def resolve(path_or_id, *, files, revision=None, cache_dir=None):
    """The local folder holding ``files`` (a sequence of ``Wanted``) of a Hub repo, or ``path_or_id`` itself when it
    is not a Hub id (``revision`` and ``cache_dir`` then play no part)."""
    if not is_hub_id(path_or_id):
        return os.fspath(path_or_id)
    repo = _Repo(path_or_id, revision=revision or "main", cache_dir=cache_dir)
    for wanted in files:
        repo.fetch(wanted)
    return repo.folder


class _Repo:
    """One Hub repo at one revision: fetches files into the cache and remembers the snapshot folder they land in."""

    def __init__(self, repo_id, *, revision, cache_dir):
        import huggingface_hub  # noqa: PLC0415 - imported only when an id is given: local folders stay fast
        from huggingface_hub import constants, errors  # noqa: PLC0415
        self.hub, self.constants, self.errors = huggingface_hub, constants, errors
        self.repo_id, self.revision, self.cache_dir = repo_id, revision, cache_dir
        self.asked_revision, self.folder = revision, None
        self.unreachable = False  # a file was neither in the cache nor fetchable (offline, or no connection)

    def fetch(self, wanted):
        """Fetch the first choice of ``wanted`` the repo has (and, for an index, its shards)."""
        for choice in wanted.choices:
            paths = []
            for name in choice:
                path = self._download(name)
                if path is None:
                    break
                paths.append(path)
            else:
                for path in paths:
                    if path.endswith(".index.json"):
                        self._fetch_shards(path)
                return
        if not wanted.optional:
            raise CheckpointNotFoundError(self._missing_message(wanted))

    def _download(self, name):
        """The cached path of file ``name``, or None when the repo lacks it (or, offline, the cache does)."""
        errors = self.errors
        try:
            path = self.hub.hf_hub_download(self.repo_id, name, revision=self.revision, cache_dir=self.cache_dir)
        except errors.RemoteEntryNotFoundError:
            return None
        except errors.LocalEntryNotFoundError:
            self.unreachable = True
            return None
        except errors.RevisionNotFoundError:
            raise CheckpointNotFoundError(f"Hub repo {self.repo_id!r} has no revision {self.asked_revision!r} "
                                          "(a branch, tag or commit hash)") from None
        except errors.RepositoryNotFoundError:  # gated and private repos included
            raise CheckpointNotFoundError(
                f"{self.repo_id!r} is neither a local directory nor a Hub repo you can read (revision "
                f"{self.asked_revision!r}; a private or gated repo needs `hf auth login` or HF_TOKEN)") from None
        except errors.HfHubHTTPError as err:
            raise CheckpointNotFoundError(f"cannot fetch {name} of Hub repo {self.repo_id!r} (revision "
                                          f"{self.asked_revision!r}): {err}") from None
        if self.folder is None:
            # snapshots/<commit>/<name>: every later file comes from this commit, whatever the branch does meanwhile
            self.folder = os.path.dirname(path)
            self.revision = os.path.basename(self.folder)
        return path

    def _fetch_shards(self, index_path):
        """Fetch the shards an index lists. Names that are not plain file names are left to the checkpoint loader,
        which refuses them with the index named."""
        weight_map = read_json(index_path, what="checkpoint index", error=CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict):
            return  # the loader says what is wrong with the index
        for shard in sorted({s for s in weight_map.values() if isinstance(s, str) and os.path.basename(s) == s}):
            if self._download(shard) is None:
                raise CheckpointNotFoundError(f"shard {shard} listed in {os.path.basename(index_path)} of Hub repo "
                                              f"{self.repo_id!r} (revision {self.asked_revision!r}) is missing"
                                              + self._offline_note())

    def _missing_message(self, wanted):
        looked_for = " or ".join(" + ".join(choice) for choice in wanted.choices)
        where = f"Hub repo {self.repo_id!r} (revision {self.asked_revision!r})"
        pickles = [name for name in wanted.refused if self._has(name)]
        if pickles:
            return f"{where} has no {looked_for}, only {', '.join(pickles)}; {PICKLE_REASON}"
        return f"{where} has no {looked_for}" + self._offline_note()

    def _offline_note(self):
        """Where a missing file was looked for, when it was not the Hub itself that said it is absent."""
        cache = self.cache_dir or self.constants.HF_HUB_CACHE
        if not self.unreachable:
            return ""
        if self.constants.is_offline_mode():
            return f" in the local cache {cache} (HF_HUB_OFFLINE=1: nothing is downloaded)"
        return f": the Hub could not be reached and the local cache {cache} lacks it"

    def _has(self, name):
        """Whether the repo holds ``name``, found without downloading it: in the cache, or asked of the Hub."""
        cached = self.hub.try_to_load_from_cache(self.repo_id, name, cache_dir=self.cache_dir, revision=self.revision)
        if isinstance(cached, str):
            return True
        if self.constants.is_offline_mode():
            return False
        try:
            return self.hub.file_exists(self.repo_id, name, revision=self.revision)
        except Exception:  # noqa: BLE001 - only a better error message hangs on this: unknown counts as absent
            return False
