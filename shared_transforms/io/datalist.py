"""The contract's datalist: ``{"training": [...], "validation": [...], "testing": [...]}``.

Each item is ``{"subject": ..., "low": ..., "high": ..., "mask": ...}`` (``mask`` optional) for the enhancement
bundles; a bundle of another input kind (:mod:`shared_transforms.io.input_kinds`) has its own keys; relative paths are
relative to the datalist file; splits are by subject, never by slice. Reading checks every item (missing keys,
missing files, a subject in two splits) and raises one clear :class:`InputError`; paths come back absolute.
MONAI's ``load_decathlon_datalist`` resolves paths the same way but knows nothing of subjects or splits, so the
reading is done here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .files import safe_name, write_text_atomic
from .input_kinds import DEFAULT_KIND, InputKind, input_kind
from .volumes import nifti_stem

SPLITS = ("training", "validation", "testing")
#: every file key of every input kind (resolved against the datalist's folder)
PATH_KEYS = ("low", "high", "mask", "kspace", "image")


def load_datalist(
    path: str | os.PathLike,
    required_keys: Sequence[str] = ("subject", "low", "high"),
    path_keys: Sequence[str] = PATH_KEYS,
    check_files: bool = True,
) -> dict[str, list[dict]]:
    """Read and check a datalist; returns every split (missing splits as empty lists) with absolute paths.

    Args:
        required_keys: keys every item must have (FLAT documents its own).
        path_keys: keys holding file paths, resolved against the datalist's folder.
        check_files: also check that every referenced file exists.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(path, "datalist file not found")
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON ({err})") from None
    except RecursionError:
        raise InputError(path, "is nested too deeply to be a datalist (beyond Python's recursion limit)") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"is not a text (JSON) file ({err.reason} at byte {err.start})") from None
    if not isinstance(raw, dict):
        raise InputError(path, "a datalist must be a JSON object with 'training', 'validation' and/or 'testing' lists")
    unknown = set(raw) - set(SPLITS)
    if unknown and not set(raw) & set(SPLITS):
        raise InputError(path, f"has no 'training', 'validation' or 'testing' list (found keys {sorted(unknown)})")
    base = os.path.dirname(os.path.abspath(path))
    out: dict[str, list[dict]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        items = raw.get(split, [])
        if not isinstance(items, list):
            raise InputError(path, f"{split!r} must be a list of items")
        resolved = []
        for i, item in enumerate(items):
            where = f"{path} [{split!r}][{i}]"
            if not isinstance(item, Mapping):
                raise InputError(where, 'item must be an object like {"subject": ..., "low": ..., "high": ...}')
            missing = [k for k in required_keys if k not in item or item[k] in (None, "")]
            if missing:
                raise InputError(where, f"item lacks the key(s) {missing}")
            item = dict(item)
            for key in path_keys:
                if item.get(key):
                    item[key] = os.path.normpath(os.path.join(base, os.path.expanduser(str(item[key]))))
                    if check_files and not os.path.isfile(item[key]):
                        raise InputError(item[key], f"file not found (listed in {where} under {key!r})")
            subject = str(item.get("subject", f"{split}_{i}"))
            if subject in seen and seen[subject] != split:
                raise InputError(
                    path, f"subject {subject!r} is in both {seen[subject]!r} and {split!r}; splits must be by subject"
                )
            seen[subject] = split
            resolved.append(item)
        out[split] = resolved
    return out


def load_split(path: str | os.PathLike, split: str, **kwargs) -> list[dict]:
    """One split of a checked datalist (see :func:`load_datalist`); raises when it is empty."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    items = load_datalist(path, **kwargs)[split]
    if not items:
        raise InputError(path, f"the {split!r} split is empty")
    return items


def _count(value: float, n: int) -> int:
    """``value`` >= 1 is a number of subjects, 0 < value < 1 a fraction of ``n`` (at least one subject)."""
    if value <= 0:
        return 0
    return int(value) if value >= 1 else max(1, round(n * value))


def split_subjects(
    subjects: Iterable[str], n_val: float = 0.15, n_test: float = 0.15, seed: int = 0
) -> dict[str, list[str]]:
    """Seeded subject-level split into training/validation/testing.

    Args:
        n_val, n_test: a number of subjects (>= 1) or a fraction (< 1) of them; training keeps the rest and at least
            one subject.
    """
    subjects = sorted(set(subjects))
    n = len(subjects)
    k_test, k_val = _count(n_test, n), _count(n_val, n)
    if k_test + k_val >= n:
        raise ValueError(f"{n} subjects cannot give {k_val} validation + {k_test} testing subjects and any training")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [subjects[i] for i in order]
    return {
        "testing": sorted(shuffled[:k_test]),
        "validation": sorted(shuffled[k_test : k_test + k_val]),
        "training": sorted(shuffled[k_test + k_val :]),
    }


def write_datalist(
    items: Sequence[Mapping],
    path: str | os.PathLike,
    n_val: float = 0.15,
    n_test: float = 0.15,
    seed: int = 0,
    relative: bool = True,
    splits: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[dict]]:
    """Split ``items`` (each with a ``subject``) by subject and write the datalist JSON atomically.

    Args:
        n_val, n_test: see :func:`split_subjects`.
        relative: write paths relative to the datalist's folder (the folder can then be moved as a whole).
        splits: a given ``{split: [subject, ...]}`` instead of :func:`split_subjects` (must name every subject).
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    if splits is None:
        splits = split_subjects([str(it["subject"]) for it in items], n_val, n_test, seed)
    missing = {str(it["subject"]) for it in items} - {s for subs in splits.values() for s in subs}
    if missing:
        raise ValueError(f"splits name no split for subject(s) {sorted(missing)[:5]}")
    which = {s: split for split, subs in splits.items() for s in subs}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for it in sorted(items, key=lambda x: str(x["subject"])):
        it = dict(it)
        if relative:
            for key in PATH_KEYS:
                if it.get(key) and os.path.isabs(str(it[key])):
                    it[key] = os.path.relpath(str(it[key]), base)
        out[which[str(it["subject"])]].append(it)
    write_text_atomic(path, json.dumps(out, indent=2))
    return out


def merge_datalists(
    sources: Mapping[str, str | os.PathLike], path: str | os.PathLike, training_repeats: Mapping[str, int] | None = None
) -> dict[str, list[dict]]:
    """One datalist from several, split by split: ``sources`` maps a short name (e.g. a scanner or a simulator) to a
    datalist JSON; each item keeps its split, its subject becomes ``<name>_<subject>`` (unique output names), gains
    ``"source": name``, and its paths point to the same files from the new datalist's folder. Written atomically.

    ``training_repeats`` maps a source name to how many times its training items are listed (default 1): a weight
    on that source in every epoch, e.g. to keep what a fine-tuned model knew of its first data. Validation and
    testing items are listed once, whatever the weight.

    The same anatomy may sit in two sources (the demo sets share theirs); whoever merges them keeps the splits of
    those sources consistent (``tools/make_demo_data.py`` does) so that no test subject of one is trained on in the
    other.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    repeats = {str(k): v for k, v in (training_repeats or {}).items()}
    for name, n in repeats.items():
        if name not in sources:
            raise InputError(
                str(path), f"training_repeats names {name!r}, which is not a source ({', '.join(sources)})"
            )
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(str(path), f"training_repeats[{name!r}] must be an integer >= 1, got {n!r}")
    for name, src in sources.items():
        if not str(name) or any(c in str(name) for c in "/\\:"):
            raise InputError(str(src), f"source name {name!r} must be non-empty, without / \\ or :")
        data = load_datalist(src, required_keys=("subject",))  # paths come back absolute
        for split in SPLITS:
            for it in data.get(split, []):
                it = dict(it)
                for key in PATH_KEYS:
                    if it.get(key):
                        it[key] = os.path.relpath(it[key], base)
                it["subject"], it["source"] = f"{name}_{it['subject']}", str(name)
                out[split].extend([it] * (repeats.get(str(name), 1) if split == "training" else 1))
    write_text_atomic(path, json.dumps(out, indent=2))
    return out


def output_stems(paths: Sequence[str], subjects: Sequence[str] | None = None) -> list[str]:
    """One output name stem per input, unique within a run, so that no result replaces another.

    The input file's own stem (``T1w`` for ``.../T1w.nii.gz``) where the stems are unique; else, for a datalist,
    ``<subject>_<stem>`` where the subjects are unique (a BIDS datalist of ``sub-*/anat/T1w.nii.gz``); else the path
    relative to the inputs' common folder, separators as ``_`` (``sub-01_anat_T1w``). Raises :class:`InputError`,
    naming both files, when two would still get the same name (``a.nii`` beside ``a.nii.gz``) - before anything is
    computed.
    """
    paths = [os.fspath(p) for p in paths]
    stems = [nifti_stem(p) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    if subjects is not None:
        try:  # an id like ../x stays inside its folder; one with no usable character ("..") names nothing
            named = [f"{safe_name(s)}_{stem}" for s, stem in zip(subjects, stems, strict=True)]
        except ValueError:
            named = []
        if named and len(set(named)) == len(named):
            return named
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    rel = [
        os.path.join(os.path.relpath(os.path.dirname(os.path.abspath(p)), common), st)
        for p, st in zip(paths, stems, strict=True)
    ]
    rel = [os.path.normpath(r).replace(os.sep, "_").lstrip("._") or st for r, st in zip(rel, stems, strict=True)]
    if len(set(rel)) == len(rel):
        return rel
    first: dict[str, str] = {}
    for p, r in zip(paths, rel, strict=True):
        if r in first:
            raise InputError(
                p,
                f"would write the same output name ({r}_<bundle>.nii.gz) as {first[r]}; rename one "
                "of them, or list them in a datalist with distinct subjects",
            )
        first[r] = p
    return rel  # not reached


def _is_bundle_output(path: str) -> bool:
    """A bundle's output: marked by its writer (:mod:`.ownership`) and named ``<stem>_<writer>.nii[.gz]``."""
    from .ownership import written_by

    owner = written_by(path) if path.lower().endswith((".nii", ".nii.gz")) else None
    name = os.path.basename(path).lower()
    return owner is not None and name.endswith((f"_{owner}.nii", f"_{owner}.nii.gz"))


def inference_items(
    input_path: str | os.PathLike, split: str = "testing", kind: str | InputKind = DEFAULT_KIND
) -> list[dict]:
    """What a bundle's inference runs on: ``[{"image": path, "output_stem": name}]`` from one file, a folder (its
    files of the input ``kind``'s endings, sorted by name) or a datalist JSON (the ``kind.inference_key`` files of
    its ``split``; other keys, ``subject`` and ``high`` included, are optional and not read); ``output_stem`` from
    :func:`output_stems`, unique within the run (checked before computing)."""
    kind = input_kind(kind)
    input_path = os.fspath(input_path)
    subjects = None
    if os.path.isdir(input_path):
        files = sorted(f for f in os.listdir(input_path) if kind.accepts(f) and not f.startswith("."))
        outputs = [f for f in files if _is_bundle_output(os.path.join(input_path, f))]
        if outputs:  # an output folder used as the input folder: never enhance the project's own results again
            print(
                f"note: {input_path}: {len(outputs)} file(s) skipped as outputs of this project's bundles "
                f"(e.g. {outputs[0]}); pass one as --input_path to enhance it",
                flush=True,
            )
        files = [f for f in files if f not in outputs]
        if not files:
            raise InputError(input_path, f"folder holds no input files ({' or '.join(kind.suffixes)})")
        paths = [os.path.join(input_path, f) for f in files]
    elif input_path.lower().endswith(".json"):
        # only the files inference reads are resolved (a test list's high fields may live elsewhere); a missing one
        # is not checked here but refused by the loader as that item's failure, so every other item is processed
        items = load_split(
            input_path, split, required_keys=(kind.inference_key,), path_keys=(kind.inference_key,), check_files=False
        )
        paths = [it[kind.inference_key] for it in items]
        if all(it.get("subject") not in (None, "") for it in items):
            subjects = [str(it["subject"]) for it in items]
    elif not os.path.exists(input_path):
        raise InputError(input_path, "file not found")
    else:
        paths = [input_path]
    return [{"image": p, "output_stem": stem} for p, stem in zip(paths, output_stems(paths, subjects), strict=True)]


def pair_items(datalist: str | os.PathLike, split: str, kind: str | InputKind = DEFAULT_KIND) -> list[dict]:
    """Training / evaluation items of one split in MONAI's engine keys, as the input ``kind`` maps them (for
    ``lowfield_nifti``: ``image`` = low field, ``label`` = high field, ``mask`` when the datalist has one), plus
    ``subject``."""
    kind = input_kind(kind)
    out = []
    for it in load_split(datalist, split, required_keys=("subject", *kind.required_keys)):
        item = {engine: it[key] for key, engine in kind.datalist_keys.items() if it.get(key)}
        out.append({**item, "subject": it["subject"]})
    return out
