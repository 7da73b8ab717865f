"""Images: read whole, decoded and preprocessed on worker threads, embedded in batches by the
image tower; one vector per file, modality "image"."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.commit import commit, stored_fields
from jrsearch.indexer.decode import Decoded, batched, decoded_in_order, read_file, same_content
from jrsearch.indexer.handler import KindHandler, KindInfo, Picture
from jrsearch.indexer.run import IndexRun
from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.errors import FailureCode, MediaError
from jrsearch.retrieval.imageio import open_image
from jrsearch.retrieval.library import ImageRecord
from jrsearch.retrieval.media_metadata import image_metadata
from jrsearch.retrieval.types import MediaKind

MAX_IMAGE_BYTES = 256 * 1024 * 1024  # the largest real photos (RAW-sized TIFFs) stay well below
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                        ".pbm", ".jfif", ".jpe", ".ico", ".tga", ".heic", ".heif", ".avif"})


def decode_image(candidate: Candidate, transform: Callable, draft_size: int) -> Decoded:
    if candidate.size > MAX_IMAGE_BYTES:
        return Decoded(candidate).fail(f"file too large ({candidate.size:,} bytes, limit {MAX_IMAGE_BYTES:,}); "
                                       f"not read as an image", FailureCode.TOO_LARGE)
    data, out = read_file(candidate)
    if data is None or same_content(out):
        return out
    try:
        image = open_image(data, name=str(candidate.path), draft_size=draft_size)
    except MediaError as exc:
        out.failure = exc
        return out
    out.fields["width"], out.fields["height"] = image.info["full_size"]
    out.metadata = image_metadata(image, candidate.path, mtime_ns=candidate.mtime_ns)  # the same open
    out.payload = transform(image)
    return out


def warm_up(encoder: Encoder) -> None:
    """Load the model and run one blank image, so that its start-up (an ONNX Runtime session takes
    1-3 s to open) overlaps the decoding of the first batch instead of following it. A failure
    here is left for the first real batch to raise."""
    from PIL import Image

    with contextlib.suppress(Exception):  # raised again, in the run's own thread, by the first batch
        encoder.encode_images([encoder.preprocess(Image.new("RGB", (encoder.image_size,) * 2))])


def image_record(decoded: Decoded) -> ImageRecord:
    return ImageRecord(**stored_fields(decoded), **decoded.fields)


class ImageHandler(KindHandler):
    info = KindInfo(MediaKind.IMAGE, EXTENSIONS, picture=Picture.FILE)

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        encoder, options = run.encoder, run.options

        def decode(c: Candidate) -> Decoded:
            return decode_image(c, encoder.preprocess, encoder.image_size)

        decoded = decoded_in_order(decode, todo, options.batch_size, options.workers)
        warming = threading.Thread(target=warm_up, args=(encoder,), name="warm-up")
        warming.start()
        try:
            for batch in batched(decoded, options.batch_size):
                ok = [d for d in batch if d.payload is not None]
                if ok:
                    for item, vector in zip(ok, encoder.encode_images([d.payload for d in ok]), strict=True):
                        item.vectors = vector.reshape(1, -1)
                commit(run, batch, image_record)
                run.progress.advance(len(batch))
        finally:
            warming.join()


IMAGES = ImageHandler()
