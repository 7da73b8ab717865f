"""Learning the audio tower against a frozen image tower: AVID, with CMA as an option.

AVID (audio-visual instance discrimination, Morgado et al.): each pair (audio window i, image
embedding of the frame at the same moment) is an instance. A cross-modal NCE loss asks audio i to
pick its own image out of the others, and image i to pick its own audio, with the other pairs of the
batch (and, optionally, a FIFO memory queue of earlier batches) as negatives, at a temperature.
The image side is frozen, so the audio tower learns to land in the image tower's space.

CMA (cross-modal agreement): after `cma_start` of training, the positives of instance i grow to the
instances of the batch that are among i's top-k neighbours in *both* spaces (audio and image), so
two recordings of the same thing stop being pushed apart.

With `ema`, the checkpoint's tower is an exponential moving average of the weights over the
steps (the raw weights are kept in its training state for `--resume`): on few-speaker data the
last weights swing by several points of recall from one epoch to the next, the average much less.

`objective="within"` is the within-modal baseline: two augmented views of the same audio are the
positive pair, without any image (a SimCLR-style audio-only instance discrimination).

Deterministic with a seed: model init, batch order and augmentation all derive from
(seed, epoch), and the memory queue restarts each epoch, so a resumed run equals an unbroken one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.encoders.audio import AudioTowerConfig, build_tower, log_mel, read_checkpoint, save_tower
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import torch

OBJECTIVES = ("avid", "within")
FEATURE_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "avid"  # "avid" (cross-modal) or "within" (audio-only baseline)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    temperature: float = 0.07
    queue_size: int = 0  # extra negatives from earlier batches of the epoch (0: the batch only)
    cma_k: int = 0  # CMA: positives expanded to the top-k agreeing instances (0: AVID only)
    cma_start: float = 0.2  # share of the epochs trained with plain AVID before CMA switches on
    augment: bool = True
    stretch: float = 0.1  # a training view may be up to this much faster or slower
    mel_shift: int = 0  # mel bands a training view may be shifted by (a crude pitch change)
    ema: float = 0.0  # >0: save an exponential moving average of the weights with this decay (0: the last weights)
    seed: int = 0


@dataclass
class PairSet:
    """Training pairs: audio features and the frozen image embeddings they must land near."""

    features: np.ndarray  # (n, 1, n_mels, frames) float32 log-mel of each audio window
    targets: np.ndarray  # (n, dim) float32, L2-normalised

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def from_windows(cls, windows: np.ndarray, targets: np.ndarray, config: AudioTowerConfig) -> PairSet:
        feats = [log_mel(windows[i:i + FEATURE_BATCH], config) for i in range(0, len(windows), FEATURE_BATCH)]
        targets = np.asarray(targets, dtype=np.float32)
        targets = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
        return cls(np.concatenate(feats), targets)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch, from epoch 1
    seconds: float = 0.0  # training time over all runs (a resumed run adds to it)
    resumed_from: int = 0  # the epoch a resumed run started after


def augment(features: np.ndarray, rng: np.random.Generator, stretch: float = 0.1, mel_shift: int = 0) -> np.ndarray:
    """Random gain, time stretch and shift, mel shift (a crude pitch/formant change), time/frequency masks."""
    x = features.copy()
    n, _, mels, frames = x.shape
    floor = float(x.min())
    x += rng.uniform(-1.0, 1.0, size=(n, 1, 1, 1)).astype(np.float32)  # gain: +-1 in log power
    for i in range(n):
        if stretch:  # speaking (or playing) faster or slower: resample the frames
            source = np.clip(np.round(np.arange(frames) * rng.uniform(1 - stretch, 1 + stretch)), 0, frames - 1)
            x[i] = x[i][:, :, source.astype(np.int64)]
        x[i] = np.roll(x[i], (int(rng.integers(-mel_shift, mel_shift + 1)),
                              int(rng.integers(-frames // 10, frames // 10 + 1))), axis=(1, 2))
        f0, fw = int(rng.integers(0, mels)), int(rng.integers(0, mels // 8 + 1))
        t0, tw = int(rng.integers(0, frames)), int(rng.integers(0, frames // 8 + 1))
        x[i, :, f0:f0 + fw, :] = floor
        x[i, :, :, t0:t0 + tw] = floor
    return x


def cma_positives(a: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """(B, B) bool: i's positives are i and the instances in i's top-k in both spaces."""
    import torch

    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    k = min(k, len(a) - 1)
    if k <= 0:
        return eye

    def neighbours(x: torch.Tensor) -> torch.Tensor:
        sim = (x @ x.T).masked_fill(eye, float("-inf"))
        mask = torch.zeros_like(eye)
        return mask.scatter_(1, sim.topk(k, dim=1).indices, True)

    return eye | (neighbours(a.detach()) & neighbours(v.detach()))


def multi_positive_nce(queries: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor, temperature: float,
                       extra_keys: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of -log(sum_pos exp(q.k/t) / sum_all exp(q.k/t)); extra keys are negatives."""
    import torch

    logits = queries @ keys.T / temperature
    if extra_keys is not None and len(extra_keys):
        logits = torch.cat([logits, queries @ extra_keys.T / temperature], dim=1)
        positives = torch.cat([positives, torch.zeros(len(queries), len(extra_keys), dtype=torch.bool,
                                                      device=positives.device)], dim=1)
    positive = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - positive).mean()


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    if n <= size:
        return [order]
    return [order[i:i + size] for i in range(0, n - size + 1, size)]  # full batches: equal negatives each step


def train_audio_tower(pairs: PairSet, tower_config: AudioTowerConfig, image_model: ModelSpec, config: TrainConfig,
                      out: Path, resume: bool = False,
                      on_epoch: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume training) an audio tower; a checkpoint is written to `out` after every epoch."""
    import torch

    if config.objective not in OBJECTIVES:
        raise JrsearchError(f"unknown objective '{config.objective}'; use one of {', '.join(OBJECTIVES)}")
    if len(pairs) < 2:
        raise JrsearchError("need at least 2 audio-visual pairs to train on")
    if pairs.targets.shape[1] != tower_config.dim:
        raise JrsearchError(f"image embeddings have dim {pairs.targets.shape[1]}, the tower {tower_config.dim}")
    torch.manual_seed(config.seed)
    model = build_tower(tower_config)
    ema = copy.deepcopy(model) if config.ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = TrainResult()
    start_epoch = 0
    if resume and out.is_file():
        start_epoch, result = _restore(out, model, ema, optimizer, pairs, config)
    steps_per_epoch = len(_batches(len(pairs), config.batch_size, np.random.default_rng(0)))
    done, total_steps = start_epoch * steps_per_epoch, max(1, config.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # cosine decay over the whole run, resumed where it stopped
        optimizer, lambda step: float(0.5 * (1 + np.cos(np.pi * min(1.0, (done + step) / total_steps)))))
    targets = torch.from_numpy(pairs.targets)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        result.losses.append(_train_epoch(model, ema, optimizer, schedule, pairs, targets, config, epoch, done))
        result.seconds += time.perf_counter() - began
        _save(out, model, ema, optimizer, tower_config, image_model, config, result, epoch + 1, len(pairs))
        if on_epoch is not None:
            on_epoch(epoch + 1, result.losses[-1])
    return result


def _train_epoch(model: torch.nn.Module, ema: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, pairs: PairSet, targets: torch.Tensor,
                 config: TrainConfig, epoch: int, done: int) -> float:
    """One epoch of steps over `pairs`, in the batch order and augmentation (seed, epoch) draws; the
    mean loss of its steps. `done`: the steps of the epochs before this run (a resumed run's)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng([config.seed, epoch])
    use_cma = config.cma_k > 0 and epoch >= int(config.cma_start * config.epochs)
    queue_a: list = []
    queue_v: list = []
    model.train()
    total = 0.0
    batches = _batches(len(pairs), config.batch_size, rng)
    for rows in batches:
        x = pairs.features[rows]
        a = F.normalize(model(torch.from_numpy(augment(x, rng, config.stretch, config.mel_shift)
                                               if config.augment else x)), dim=-1)
        if config.objective == "avid":
            v = targets[rows]
        else:  # the within-modal baseline: another view of the same sound
            v = F.normalize(model(torch.from_numpy(augment(x, rng, config.stretch, config.mel_shift))), dim=-1)
        positives = cma_positives(a, v, config.cma_k) if use_cma else torch.eye(len(rows), dtype=torch.bool)
        old_a = torch.cat(queue_a) if queue_a else None
        old_v = torch.cat(queue_v) if queue_v else None
        loss = 0.5 * (multi_positive_nce(a, v, positives, config.temperature, old_v)
                      + multi_positive_nce(v, a, positives.T, config.temperature, old_a))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema is not None:
            done_steps = done + schedule.last_epoch
            _ema_update(ema, model, min(config.ema, (1 + done_steps) / (10 + done_steps)))
        total += float(loss.detach())
        if config.queue_size:
            queue_a, queue_v = _push(queue_a, a, config.queue_size), _push(queue_v, v, config.queue_size)
    return total / len(batches)


def _push(queue: list[torch.Tensor], batch: torch.Tensor, size: int) -> list[torch.Tensor]:
    queue = [*queue, batch.detach()]
    while sum(len(q) for q in queue) - len(queue[0]) >= size:
        queue = queue[1:]
    return queue


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for weights and BatchNorm statistics alike."""
    import torch

    with torch.no_grad():
        for averaged, current in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if averaged.dtype.is_floating_point:
                averaged.lerp_(current, 1.0 - decay)
            else:
                averaged.copy_(current)


def _save(out: Path, model: torch.nn.Module, ema: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
          tower_config: AudioTowerConfig, image_model: ModelSpec, config: TrainConfig, result: TrainResult,
          epoch: int, n_pairs: int) -> None:
    """The tower a library uses is the averaged one when there is one; the training state keeps the
    raw weights for a resumed run."""
    state = {"epoch": epoch, "config": asdict(config), "n_pairs": n_pairs, "losses": list(result.losses),
             "seconds": result.seconds, "optimizer": optimizer.state_dict()}
    if ema is not None:
        state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_tower(out, ema if ema is not None else model, tower_config, image_model, extra={"train_state": state})


def _restore(out: Path, model: torch.nn.Module, ema: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
             pairs: PairSet, config: TrainConfig) -> tuple[int, TrainResult]:
    payload = read_checkpoint(out)
    state = payload.get("train_state")
    if not state:
        raise JrsearchError(f"{out} holds no training state to resume; pass another --out or drop --resume")
    saved = {k: v for k, v in state["config"].items() if k != "epochs"}
    if saved != {k: v for k, v in asdict(config).items() if k != "epochs"} or state["n_pairs"] != len(pairs):
        raise JrsearchError(f"{out} was trained with other settings or data ({saved}, {state['n_pairs']} pairs); "
                            f"resume with the same ones, or pass another --out")
    model.load_state_dict(state.get("model", payload["state_dict"]))
    if ema is not None:
        ema.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], TrainResult(list(state["losses"]), state["seconds"], state["epoch"])


def save_loss_curve(losses: list[float], path: Path, title: str = "audio tower training") -> None:
    """The mean loss per epoch as a PNG."""
    from jrsearch.retrieval.extras import require

    matplotlib = require("matplotlib", "train", "the training loss curve")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("NCE loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
