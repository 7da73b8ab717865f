"""`jrsearch train audio DIR`: learn an audio tower from videos, self-supervised (soundtrack <-> frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jrsearch.cli.common import MODEL_CHOICE, JsonOpt, LibraryOpt, handles_errors, model_options, resolve_model
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.types import ModelChoice, ModelSpec

if TYPE_CHECKING:  # imported by the command when it runs: `--help` stays fast
    from rich.progress import Progress

    from jrsearch.retrieval.encoders import Encoder
    from jrsearch.retrieval.encoders.audio import AudioTowerConfig
    from jrsearch.retrieval.training.avid import PairSet, TrainResult

train_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Learn towers from your own media.")


@train_app.command("audio")
@handles_errors
@model_options("model", "pretrained", "checkpoint", "device")
def audio(
    paths: Annotated[list[Path], typer.Argument(help="Folders or video files with sound to learn from.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the audio tower checkpoint.")] = Path(
        "audio_tower.pt"),
    library: LibraryOpt = None,
    choice: ModelChoice = MODEL_CHOICE,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the pairs.")] = 30,
    batch_size: Annotated[int, typer.Option(min=2, help="Pairs per step (the in-batch negatives).")] = 128,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (cosine decay).")] = 2e-3,
    temperature: Annotated[float, typer.Option(help="NCE temperature.")] = 0.07,
    queue: Annotated[int, typer.Option(min=0, help="Memory queue of earlier embeddings as extra negatives.")] = 0,
    cma: Annotated[int, typer.Option(min=0, help="CMA: expand positives to the top-K instances agreeing in "
                                                  "both spaces (0: AVID only).")] = 0,
    ema: Annotated[float, typer.Option(min=0.0, max=0.9999, help="Save an exponential moving average of the weights "
                                                                  "with this decay (0: the last weights).")] = 0.0,
    lifter: Annotated[int, typer.Option(min=0, help="Keep this many cepstral coefficients per frame (13 suits "
                                                    "speech from many voices; 0: plain log-mel).")] = 0,
    fps: Annotated[float, typer.Option(min=0.01, help="Frames (and sound windows) sampled per second.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and data give the same tower.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the training saved in --out.")] = False,
    curve: Annotated[Path | None, typer.Option(help="Loss curve PNG (default: OUT with .loss.png).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """AVID: soundtrack windows learn to match the frozen image-tower vectors of the frames at the same time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jrsearch.retrieval.extras import require

    require("torch", "train", "jrsearch train audio")
    require("matplotlib", "train", "jrsearch train audio (its loss curve)")  # before hours of training, not after
    from jrsearch.indexer.walk import walk
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.encoders.audio import AudioTowerConfig
    from jrsearch.retrieval.training.avid import TrainConfig, save_loss_curve, train_audio_tower
    from jrsearch.retrieval.types import MediaKind

    spec = _image_model(library, choice)
    videos = [p for root in paths for p, kind in walk(root) if kind == MediaKind.VIDEO]
    if not videos:
        raise JrsearchError(f"no videos found under {', '.join(map(str, paths))}")
    encoder = load_encoder(spec, device=choice.device)
    tower = AudioTowerConfig(dim=encoder.dim, lifter=lifter)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"), disable=as_json)
    with bar:
        pairs, used, skipped = _pair_set(videos, encoder, tower, fps, bar)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature, queue_size=queue,
                             cma_k=cma, ema=ema, seed=seed)
        task = bar.add_task("training", total=epochs, info="")
        result = train_audio_tower(pairs, tower, spec, config, out, resume=resume,
                                   on_epoch=lambda e, loss: bar.update(task, completed=e, info=f"loss {loss:.4f}"))
        bar.update(task, completed=epochs)
    curve = curve or out.with_suffix(".loss.png")
    save_loss_curve(result.losses, curve, title=f"AVID{'+CMA' if cma else ''} on {len(pairs)} pairs")
    summary = {"out": str(out), "loss_curve": str(curve), "image_model": spec.label(), "pairs": len(pairs),
               "videos": len(videos), "videos_used": used, **_training_figures(result), "skipped": skipped}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


def _pair_set(videos: list[Path], encoder: Encoder, tower: AudioTowerConfig, fps: float,
              bar: Progress) -> tuple[PairSet, int, list[str]]:
    """The (sound window, frame vector) pairs of every video that has both; how many videos gave some."""
    import numpy as np

    from jrsearch.retrieval.training.avid import PairSet

    parts, skipped = _decode_pairs(videos, encoder, tower, fps, bar)
    if not parts:
        raise JrsearchError("none of the videos has both frames and sound to learn from")
    return PairSet(np.concatenate([p.features for p in parts]), np.concatenate([p.targets for p in parts])), \
        len(parts), skipped


def _training_figures(result: TrainResult) -> dict[str, Any]:
    return {"epochs": len(result.losses), "resumed_from": result.resumed_from,
            "first_loss": round(result.losses[0], 4), "final_loss": round(result.losses[-1], 4),
            "train_seconds": round(result.seconds, 1)}


def _print_summary(summary: dict[str, Any]) -> None:
    typer.echo(f"trained on {summary['pairs']} pairs from {summary['videos_used']} of {summary['videos']} videos: "
               f"loss {summary['first_loss']} -> {summary['final_loss']} in {summary['train_seconds']} s")
    typer.echo(f"audio tower: {summary['out']} (aligned to {summary['image_model']}); "
               f"loss curve: {summary['loss_curve']}")
    typer.echo(f"use it: jrsearch index DIR --audio-model {summary['out']}")
    for line in summary["skipped"]:
        typer.echo(f"  skipped: {line}")


def _image_model(library: Path | None, choice: ModelChoice) -> ModelSpec:
    """The library's model, or the options' (no library yet: the options' or the default)."""
    from jrsearch.retrieval.library import Library

    try:
        lib: Library | None = Library.open(library)
    except JrsearchError:
        lib = None
    return resolve_model(lib, choice)


def _decode_pairs(videos: list[Path], encoder: Encoder, tower: AudioTowerConfig, fps: float,
                  bar: Progress) -> tuple[list[PairSet], list[str]]:
    """Log-mel features and frame vectors per video (raw windows are dropped as soon as they are
    read), and the videos skipped, with why."""
    from jrsearch.indexer.video import video_pairs
    from jrsearch.retrieval.errors import MediaError
    from jrsearch.retrieval.training.avid import PairSet

    parts: list[PairSet] = []
    skipped: list[str] = []
    task = bar.add_task("decoding", total=len(videos), info="")
    for path in videos:
        try:
            windows, targets = video_pairs(path, encoder, tower.sample_rate, tower.window_samples, fps)
            if len(windows):
                parts.append(PairSet.from_windows(windows, targets, tower))
        except MediaError as exc:
            skipped.append(f"{path}: {exc.reason}")
        bar.advance(task)
    return parts, skipped
