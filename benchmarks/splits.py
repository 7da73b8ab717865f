"""Test splits for the retrieval benchmarks: which images, which captions, in which order.

Every loader returns a `RetrievalSplit`: images in split order (COCO 1K folds are consecutive
runs of that order) and captions grouped by image. Sources (see data/README.md for where to get
them and how to lay them out):

- `dataset_coco.json` / `dataset_flickr30k.json`: Karpathy & Fei-Fei's split files, the standard.
- COCO `captions_val2014.json` plus a list of image ids (one per line) giving the split's order.
- A TSV `image_id<TAB>caption_id<TAB>caption` in split order (../shared/data/coco-karpathy-test).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jrsearch.retrieval.errors import JrsearchError

CAPTIONS_PER_IMAGE = 5  # the 1K/5K literature keeps the first five captions of every image
COCO_FILENAME = "COCO_val2014_{:012d}.jpg"  # every Karpathy val/test image is in val2014
COCO_SUBDIR = "val2014"


@dataclass(frozen=True)
class SplitImage:
    image_id: str  # COCO image id, or the Flickr30K file stem
    filename: str  # file name inside the images folder
    subdir: str = ""  # the folder Karpathy's file names (e.g. "val2014"), tried when the name alone is absent

    def locate(self, images_dir: Path) -> Path:
        """The image's file: IMAGES/filename, else IMAGES/subdir/filename (IMAGES may be the COCO root)."""
        direct = images_dir / self.filename
        nested = images_dir / self.subdir / self.filename
        return nested if self.subdir and not direct.exists() and nested.exists() else direct


@dataclass
class RetrievalSplit:
    name: str  # e.g. "coco-karpathy-test"
    source: Path  # the annotation file it was read from
    images: list[SplitImage]
    captions: list[str]
    caption_image: np.ndarray  # (n_captions,) index into `images` of the image each caption describes
    caption_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        if len(self.captions) != len(self.caption_image):
            raise ValueError("one image index per caption")
        if not self.caption_ids:
            self.caption_ids = [str(i) for i in range(len(self.captions))]


def _grouped(name: str, source: Path, groups: list[tuple[SplitImage, list[tuple[str, str]]]],
             per_image: int | None) -> RetrievalSplit:
    """A split from (image, [(caption id, caption), ...]) in order, keeping `per_image` captions each."""
    images: list[SplitImage] = []
    captions: list[str] = []
    caption_image: list[int] = []
    caption_ids: list[str] = []
    for image, image_captions in groups:
        if not image_captions:
            raise JrsearchError(f"{source}: image {image.image_id} has no captions")
        for caption_id, caption in image_captions[:per_image]:
            captions.append(caption.strip())
            caption_ids.append(caption_id)
            caption_image.append(len(images))
        images.append(image)
    if not images:
        raise JrsearchError(f"{source}: no images in the split")
    return RetrievalSplit(name, source, images, captions, np.array(caption_image), caption_ids)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JrsearchError(f"cannot read split file {path}: {exc}") from None


def load_karpathy_json(path: Path, split: str = "test", per_image: int | None = CAPTIONS_PER_IMAGE,
                       data: dict | None = None) -> RetrievalSplit:
    """Karpathy's `dataset_coco.json` or `dataset_flickr30k.json`: the images marked `split`, in file order."""
    data = data if data is not None else _read_json(path)
    dataset = data.get("dataset", path.stem.removeprefix("dataset_"))
    groups = []
    for entry in data.get("images", []):
        if entry.get("split") != split:
            continue
        image_id = str(entry.get("cocoid", Path(entry["filename"]).stem))
        image = SplitImage(image_id, entry["filename"], entry.get("filepath", ""))
        groups.append((image, [(str(s.get("sentid", "")), s["raw"]) for s in entry.get("sentences", [])]))
    return _grouped(f"{dataset}-karpathy-{split}", path, groups, per_image)


def load_coco_captions(path: Path, ids_file: Path, per_image: int | None = CAPTIONS_PER_IMAGE,
                       data: dict | None = None) -> RetrievalSplit:
    """COCO `captions_val2014.json` with the split's image ids (one per line, repeats ignored) in order.

    An image's captions are taken in annotation-id order (the order of the Karpathy files).
    """
    data = data if data is not None else _read_json(path)
    try:
        wanted = list(dict.fromkeys(int(line.split()[0]) for line in ids_file.read_text().splitlines() if line.strip()))
    except (OSError, ValueError) as exc:
        raise JrsearchError(f"cannot read image ids from {ids_file} (one COCO image id per line): {exc}") from None
    files = {img["id"]: img["file_name"] for img in data.get("images", [])}
    by_image: dict[int, list[tuple[int, str]]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append((ann["id"], ann["caption"]))
    unknown = [i for i in wanted if i not in files]
    if unknown:
        raise JrsearchError(f"{len(unknown)} image ids from {ids_file} are not in {path} (first: {unknown[0]}); "
                            f"is it the right annotation file (captions_val2014.json)?")
    groups = [(SplitImage(str(i), files[i], COCO_SUBDIR), [(str(a), c) for a, c in sorted(by_image.get(i, []))])
              for i in wanted]
    return _grouped(f"coco-{ids_file.stem}", path, groups, per_image)


def load_caption_tsv(path: Path, per_image: int | None = CAPTIONS_PER_IMAGE) -> RetrievalSplit:
    """A TSV with header `image_id caption_id caption`, rows in split order, an image's rows together."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as exc:
        raise JrsearchError(f"cannot read split file {path}: {exc}") from None
    if not rows or not {"image_id", "caption_id", "caption"} <= set(rows[0]):
        raise JrsearchError(f"{path}: expected a tab-separated header 'image_id caption_id caption'")
    groups: list[tuple[SplitImage, list[tuple[str, str]]]] = []
    for row in rows:
        image_id = row["image_id"].strip()
        if not groups or groups[-1][0].image_id != image_id:
            groups.append((SplitImage(image_id, COCO_FILENAME.format(int(image_id)), COCO_SUBDIR), []))
        groups[-1][1].append((row["caption_id"].strip(), row["caption"] or ""))
    seen = [image.image_id for image, _ in groups]
    if len(seen) != len(set(seen)):
        raise JrsearchError(f"{path}: an image's rows are not consecutive; keep each image's captions together")
    return _grouped(f"{path.parent.name}/{path.name}", path, groups, per_image)


def load_split(path: Path, ids_file: Path | None = None, per_image: int | None = CAPTIONS_PER_IMAGE) -> RetrievalSplit:
    """Any supported split file, told apart by content: TSV, Karpathy JSON, or COCO captions JSON + ids."""
    if not path.is_file():
        raise JrsearchError(f"split file {path} does not exist")
    if path.suffix.lower() == ".tsv":
        return load_caption_tsv(path, per_image)
    data = _read_json(path)
    if "annotations" in data:
        if ids_file is None:
            raise JrsearchError(f"{path} is a COCO captions file; pass --ids FILE with the split's image ids "
                                f"(one per line, in order), or use Karpathy's dataset_coco.json")
        return load_coco_captions(path, ids_file, per_image, data)
    if data.get("images") and "sentences" in data["images"][0]:
        return load_karpathy_json(path, "test", per_image, data)
    raise JrsearchError(f"{path}: not a Karpathy split file (dataset_*.json) nor COCO captions JSON")


def find_split_file(images_dir: Path, names: tuple[str, ...]) -> Path:
    """The first of `names` in the images folder, its parent, or the parent's `annotations/`."""
    places = (images_dir, images_dir.parent, images_dir.parent / "annotations")
    for name in names:
        for place in places:
            if (place / name).is_file():
                return place / name
    raise JrsearchError(f"no split file ({' or '.join(names)}) next to {images_dir}; pass --captions FILE "
                        f"(data/README.md says where to get one)")


# XTD10: 1,000 COCO train2014 images with one caption each per language; de/fr come from MIC, jp from STAIR.
XTD10_FILES = {"en": "XTD10", "de": "MIC", "fr": "MIC", "es": "XTD10", "it": "XTD10", "jp": "STAIR",
               "ko": "XTD10", "pl": "XTD10", "ru": "XTD10", "tr": "XTD10", "zh": "XTD10"}
XTD10_IMAGES = 1000
XTD10_SUBDIR = "train2014"


def _read_lines(path: Path) -> list[str]:
    """A file's lines without a trailing empty one (some XTD10 files lack the final newline)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise JrsearchError(f"cannot read {path}: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def load_xtd10(captions_dir: Path, language: str) -> RetrievalSplit:
    """One XTD10 language: the 1,000 images of `test_image_names.txt`, caption i describing image i.

    The counts are checked: 1,000 distinct image names and 1,000 non-empty captions, or an error
    that names the file.
    """
    if language not in XTD10_FILES:
        raise JrsearchError(f"XTD10 has no language '{language}'; use one of {', '.join(XTD10_FILES)}")
    names_file = captions_dir / "XTD10" / "test_image_names.txt"
    captions_file = captions_dir / XTD10_FILES[language] / f"test_1kcaptions_{language}.txt"
    for path in (names_file, captions_file):
        if not path.is_file():
            raise JrsearchError(f"{path} does not exist; pass --captions DIR, the XTD10 folder holding "
                                f"XTD10/, MIC/ and STAIR/ (data/README.md says where to get it)")
    names = [line.strip() for line in _read_lines(names_file)]
    captions = _read_lines(captions_file)
    if len(names) != XTD10_IMAGES or len(set(names)) != XTD10_IMAGES:
        raise JrsearchError(f"{names_file}: expected {XTD10_IMAGES:,} distinct image names, found {len(names):,} "
                            f"({len(set(names)):,} distinct)")
    empty = [i + 1 for i, caption in enumerate(captions) if not caption.strip()]
    if len(captions) != XTD10_IMAGES or empty:
        raise JrsearchError(f"{captions_file}: expected {XTD10_IMAGES:,} non-empty captions (one per image), found "
                            f"{len(captions):,}" + (f", line {empty[0]} empty" if empty else ""))
    groups = [(SplitImage(Path(name).stem, name, XTD10_SUBDIR), [(f"{language}:{i}", caption)])
              for i, (name, caption) in enumerate(zip(names, captions, strict=True))]
    return _grouped(f"xtd10-{language}", captions_file, groups, None)
