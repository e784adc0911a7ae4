"""Heads that read the voice's encoder frames, against the packaged head's mean and standard deviation.

The packaged head pools each encoder layer's states over a segment's frames by their mean and
standard deviation (every 20-ms frame counts the same), mixes the layers with one learned softmax
weighting and reads the result with a logistic regression and an MLP. Three ways to get more from
Whisper base are measured against it, each in place of the MLP:

- **attention pooling over time and layers**: per frame a score ``w2 · tanh(W1 x_t)`` of the
  layer-mixed state ``x_t`` (each layer standardised per dimension), a softmax over the segment's
  frames, and the attention-weighted mean and standard deviation; the layer mix is learned with it;
- **the top encoder block fine-tuned**: a trainable copy of Whisper's last block (initialised from
  it, learning rate 3e-5, 8 epochs) runs over the segment's frames of the layer below; its
  output's mean and standard deviation replace that layer's frozen statistics;
- **corpus-adversarial training** (``--heads adversarial``): the packaged MLP with a corpus
  classifier on its embedding, whose gradient is reversed into it, at each ``--adversarial-strength``
  (0: the same trainer without the adversary, the control).

Everything else is the packaged MLP's (256 GELU units, dropout 0.2/0.5, AdamW, one-cycle, label
smoothing 0.1, the partial-label loss, corpora balanced, the 65 prosodic and MFCC statistics beside
the pooled states). Every clip is encoded once as in training (clean condition: packed with its
speaker's other clips; about 5 min, then cached); all heads read the same frames, are trained on the
same clips with the same seeds, and are scored with each corpus held out in turn and on 5
speaker-disjoint folds over all corpora. Printed per test set: UA over the corpus's own classes and
the angry false-alarm rate of each MLP alone and beside the logistic regression (the packaged head's form).

    python benchmarks/voice_frame_heads.py --data ../shared/data [--tests corpora|speakers] [--heads attention top-block adversarial]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from multimodal_ser import voice
from multimodal_ser.encoder import SpeechEncoder, block_with_bias
from multimodal_ser.evaluation import metrics
from multimodal_ser.files import atomic_output, cache_dir
from multimodal_ser.labels import EMOTIONS, RAVDESS_8
from multimodal_ser.training.audio.conditions import CLEAN
from multimodal_ser.training.audio.corpus import Corpus, corpus_folders, label_sets, render_window, training_manifest, windows_for
from multimodal_ser.training.audio.crossval import _truth7, score_corpus, speaker_folds
from multimodal_ser.training.audio.features import ENCODER_NAME, recipe_key
from multimodal_ser.training.audio.head import RECIPE, _set_loss, corpus_weights, fit_head, predict_head
from multimodal_ser.weights import load_openai_whisper

log = logging.getLogger(__name__)
FRAME_BUDGET = 12_000
"""padded frames per forward pass at most."""


@dataclasses.dataclass
class Frames:
    """Every clip's segment, encoded: its frames of all layers and its pooled features."""

    states: np.ndarray
    """shape ``(total frames, n_layers, d_model)`` float16, the clips' frames one after the other."""
    offsets: np.ndarray
    """shape ``(n + 1,)``: clip ``i`` owns ``states[offsets[i]:offsets[i+1]]``."""
    features: np.ndarray
    """shape ``(n, n_features)`` float32: :func:`multimodal_ser.voice.segment_features` of each segment."""

    def clip(self, i: int) -> np.ndarray:
        return self.states[self.offsets[i] : self.offsets[i + 1]]


def encode_frames(corpus: Corpus, *, seed: int) -> Frames:
    """The clean condition's frames of every clip, from the cache or encoded (about 5 min)."""
    file = cache_dir() / "voice-frames" / f"clean-{recipe_key(corpus, CLEAN, seed=seed, normalise=True)}.npz"
    if file.is_file():
        with np.load(file) as z:
            return Frames(z["states"], z["offsets"], z["features"])
    encoder = SpeechEncoder(load_openai_whisper(ENCODER_NAME))
    source, plan = windows_for(corpus, CLEAN, seed=seed)
    states: list[np.ndarray | None] = [None] * len(corpus.audios)
    features: list[np.ndarray | None] = [None] * len(corpus.audios)
    for placed in tqdm(plan, desc="encoding clean", unit="window"):
        encoded = encoder.encode(render_window(placed, source, CLEAN, seed=seed))
        for p in placed:
            states[p.index] = encoded.frames(*p.segment).permute(1, 0, 2).numpy().astype(np.float16)
            features[p.index] = voice.segment_features(encoded, *p.segment)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])])
    out = Frames(np.concatenate(states), offsets, np.stack(features))
    with atomic_output(file) as tmp, open(tmp, "wb") as f:
        np.savez(f, states=out.states, offsets=out.offsets, features=out.features)
    return out


def mlp_branch(n_in: int) -> nn.Sequential:
    """The packaged MLP branch's layers on ``n_in`` inputs: dropout, ``RECIPE.hidden`` GELU units, dropout, 8 logits."""
    return nn.Sequential(nn.Dropout(RECIPE.input_dropout), nn.Linear(n_in, RECIPE.hidden), nn.GELU(),
                         nn.Dropout(RECIPE.dropout), nn.Linear(RECIPE.hidden, len(RAVDESS_8)))


class AttentivePoolingHead(nn.Module):
    """Frames of every layer -> RAVDESS-8 logits: learned layer mix, attentive mean/std over time, MLP."""

    def __init__(self, *, n_layers: int, d_model: int, n_hand: int, attention: int = 128):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.score = nn.Sequential(nn.Linear(d_model, attention), nn.Tanh(), nn.Linear(attention, 1))
        self.mlp = mlp_branch(2 * d_model + n_hand)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
        """``frames (B, T, L, d)`` standardised, ``mask (B, T)`` bool (real frames), ``hand (B, n_hand)`` standardised."""
        x = torch.einsum("btld,l->btd", frames, torch.softmax(self.layer_logits, dim=0))
        weights = torch.softmax(self.score(x).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)[..., None]
        mean = (weights * x).sum(dim=1)
        std = ((weights * x * x).sum(dim=1) - mean**2).clamp_min(1e-6).sqrt()
        return self.mlp(torch.cat([mean, std, hand], dim=1))


class FrameTrainer:
    """Fits a head that reads the frames of :class:`Frames` rows, and applies it.

    Subclasses say what the head is (:meth:`new_model`), what it reads of a batch of clips
    (:meth:`inputs`, after :meth:`prepare` fitted any standardisation on the training rows) and
    how fast each part learns (:meth:`param_groups`). The loop is the packaged MLP's: AdamW,
    one-cycle learning rate, the partial-label loss with label smoothing, weighted rows.
    """

    epochs = RECIPE.epochs

    def __init__(self, frames: Frames, n_hand: int):
        self.frames, self.n_hand = frames, n_hand
        self.lengths = np.diff(frames.offsets)
        _, self.n_layers, self.d_model = frames.states.shape

    def prepare(self, rows: np.ndarray) -> None:
        hand = self.frames.features[:, -self.n_hand :]
        mean, std = np.nanmean(hand[rows], axis=0), np.nanstd(hand[rows], axis=0)
        self.hand = torch.from_numpy(np.nan_to_num((hand - mean) / np.where(std > 1e-6, std, 1.0)).astype(np.float32))

    def inputs(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def new_model(self) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict]:
        return [{"params": list(model.parameters()), "lr": RECIPE.learning_rate}]

    def padded(self, batch: np.ndarray, layers: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frames (B, T, L, d) float32 of the chosen layers, mask (B, T) bool)``, padded with zeros."""
        chosen = self.frames.states[:1, layers]
        x = torch.zeros(len(batch), int(self.lengths[batch].max()), *chosen.shape[1:])
        mask = torch.zeros(x.shape[:2], dtype=torch.bool)
        for k, i in enumerate(batch):
            clip = torch.from_numpy(self.frames.clip(i)[:, layers].astype(np.float32))
            x[k, : len(clip)], mask[k, : len(clip)] = clip, True
        return x, mask

    def by_length(self, rows: np.ndarray) -> list[np.ndarray]:
        """``rows`` split into chunks of like length, each at most :data:`FRAME_BUDGET` padded frames
        (the forward pass of a batch runs chunk by chunk, so little of it is padding)."""
        order = rows[np.argsort(self.lengths[rows], kind="stable")]
        chunks, current, longest = [], [], 0
        for i in order:
            if current and (len(current) + 1) * max(longest, self.lengths[i]) > FRAME_BUDGET:
                chunks.append(np.asarray(current))
                current, longest = [], 0
            current.append(i)
            longest = max(longest, self.lengths[i])
        chunks.append(np.asarray(current))
        return chunks

    def fit(self, rows: np.ndarray, targets: np.ndarray, allowed: np.ndarray, weights: np.ndarray, *, seed: int) -> nn.Module:
        """Train on the clips ``rows`` (int indices); ``targets``, ``allowed``, ``weights`` cover every clip.

        Batches are drawn at random, as the packaged MLP's are; each batch's gradient is summed over
        its :meth:`by_length` chunks before the step.
        """
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.prepare(rows)
        model = self.new_model()
        groups = self.param_groups(model)
        optimizer = torch.optim.AdamW(groups, weight_decay=RECIPE.weight_decay)
        steps = self.epochs * -(-len(rows) // RECIPE.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps)
        t, a, w = torch.from_numpy(targets), torch.from_numpy(allowed), torch.from_numpy(weights).float()
        model.train()
        step = 0
        for _ in tqdm(range(self.epochs), desc=type(self).__name__, unit="epoch", leave=False):
            for picked in torch.randperm(len(rows), generator=generator).split(RECIPE.batch_size):
                batch = rows[picked.numpy()]
                optimizer.zero_grad()
                for chunk in self.by_length(batch):
                    self.loss(model, chunk, batch, step / steps, t, a, w).backward()
                optimizer.step()
                schedule.step()
                step += 1
        return model.eval()

    def loss(self, model: nn.Module, chunk: np.ndarray, batch: np.ndarray, progress: float, t: torch.Tensor, a: torch.Tensor,
             w: torch.Tensor) -> torch.Tensor:
        """The chunk's share of its batch's weighted partial-label loss (``progress``: share of training done)."""
        losses = _set_loss(model(*self.inputs(chunk)), t[chunk], a[chunk], RECIPE.label_smoothing)
        return (w[chunk] * losses).sum() / w[batch].sum()

    def standardised_pools(self, rows: np.ndarray) -> torch.Tensor:
        """shape ``(n, L, 2d)``: every clip's per-layer mean/std, standardised by the training ``rows``' (as the packaged head)."""
        n_pooled = 2 * self.n_layers * self.d_model
        pooled = self.frames.features[:, :n_pooled]
        mean, std = pooled[rows].mean(axis=0), pooled[rows].std(axis=0)
        self.pool_scale = (mean, np.where(std > 1e-6, std, 1.0))
        z = (pooled - self.pool_scale[0]) / self.pool_scale[1]
        return torch.from_numpy(z.reshape(len(pooled), self.n_layers, 2 * self.d_model).astype(np.float32))

    @torch.inference_mode()
    def predict(self, model: nn.Module, rows: np.ndarray) -> np.ndarray:
        """shape ``(len(rows), 8)`` probabilities, in the order of ``rows``."""
        out = np.zeros((len(rows), len(RAVDESS_8)))
        position = {i: k for k, i in enumerate(rows)}
        for batch in self.by_length(rows):
            out[[position[i] for i in batch]] = torch.softmax(model(*self.inputs(batch)), dim=1).double().numpy()
        return out


class AttentionTrainer(FrameTrainer):
    """:class:`AttentivePoolingHead` on every layer's frames, each standardised by the training frames."""

    def prepare(self, rows: np.ndarray) -> None:
        super().prepare(rows)
        total = np.zeros((self.n_layers, self.d_model))
        squares = np.zeros_like(total)
        for i in rows:
            clip = self.frames.clip(i).astype(np.float64)
            total += clip.sum(axis=0)
            squares += (clip**2).sum(axis=0)
        n = self.lengths[rows].sum()
        self.mean = torch.from_numpy(total / n).float()
        self.std = torch.from_numpy(np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0)) + 1e-6).float()

    def inputs(self, batch):
        x, mask = self.padded(batch, slice(None))
        return (x - self.mean) / self.std, mask, self.hand[batch]

    def new_model(self):
        return AttentivePoolingHead(n_layers=self.n_layers, d_model=self.d_model, n_hand=self.n_hand)


class TopBlockHead(nn.Module):
    """The packaged MLP branch whose last layer's states come from a trainable copy of Whisper's top block.

    The copy (initialised from Whisper's) runs over the segment's frames of the layer below it only,
    not over the whole window; its output's mean and standard deviation replace that layer's pooled
    statistics (standardised as the frozen ones were), and the layers are mixed as in the packaged head.
    """

    def __init__(self, block: nn.Module, *, n_layers: int, d_model: int, n_hand: int, scale: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.block = block
        self.register_buffer("top_mean", scale[0])
        self.register_buffer("top_std", scale[1])
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.mlp = mlp_branch(2 * d_model + n_hand)

    def forward(self, below: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
        """``below (B, T, d)`` raw states of the layer under the top block, ``mask (B, T)``, ``pooled (B, L - 1, 2d)``
        the other layers' standardised mean/std, ``hand (B, n_hand)`` standardised."""
        bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))[:, None, None, :]
        top = block_with_bias(self.block, below, bias)
        m = mask[..., None].float()
        n = m.sum(dim=1)
        mean = (top * m).sum(dim=1) / n
        std = (((top - mean[:, None]) ** 2 * m).sum(dim=1) / n).clamp_min(1e-8).sqrt()
        z_top = (torch.cat([mean, std], dim=1) - self.top_mean) / self.top_std
        layers = torch.cat([pooled, z_top[:, None]], dim=1)
        mixed = (torch.softmax(self.layer_logits, dim=0)[None, :, None] * layers).sum(dim=1)
        return self.mlp(torch.cat([mixed, hand], dim=1))


class TopBlockTrainer(FrameTrainer):
    """:class:`TopBlockHead`: the top block learns at ``block_lr``, the rest as the packaged MLP."""

    epochs = 8
    block_lr = 3e-5

    def __init__(self, frames: Frames, n_hand: int, block: nn.Module):
        super().__init__(frames, n_hand)
        self.block = block

    def prepare(self, rows):
        super().prepare(rows)
        self.pooled = self.standardised_pools(rows)[:, :-1]
        top = slice((self.n_layers - 1) * 2 * self.d_model, self.n_layers * 2 * self.d_model)
        self.top_scale = tuple(torch.from_numpy(v[top]).float() for v in self.pool_scale)

    def inputs(self, batch):
        below, mask = self.padded(batch, slice(self.n_layers - 2, self.n_layers - 1))
        return below[:, :, 0], mask, self.pooled[batch], self.hand[batch]

    def new_model(self):
        return TopBlockHead(copy.deepcopy(self.block), n_layers=self.n_layers, d_model=self.d_model, n_hand=self.n_hand,
                            scale=self.top_scale)

    def param_groups(self, model):
        block = list(model.block.parameters())
        rest = [p for name, p in model.named_parameters() if not name.startswith("block.")]
        return [{"params": block, "lr": self.block_lr}, {"params": rest, "lr": RECIPE.learning_rate}]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-strength`` backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.strength * grad, None


class AdversarialHead(nn.Module):
    """The packaged MLP branch plus a corpus classifier on its embedding, trained through a gradient reversal."""

    def __init__(self, *, n_layers: int, d_model: int, n_hand: int, n_corpora: int):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.mlp_in = nn.Sequential(nn.Dropout(RECIPE.input_dropout), nn.Linear(2 * d_model + n_hand, RECIPE.hidden), nn.GELU())
        self.mlp_out = nn.Sequential(nn.Dropout(RECIPE.dropout), nn.Linear(RECIPE.hidden, len(RAVDESS_8)))
        self.corpus = nn.Sequential(nn.Linear(RECIPE.hidden, 128), nn.GELU(), nn.Linear(128, n_corpora))

    def embed(self, pooled: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
        """``pooled (B, L, 2d)``, ``hand (B, n_hand)`` standardised -> ``(B, hidden)``."""
        mixed = (torch.softmax(self.layer_logits, dim=0)[None, :, None] * pooled).sum(dim=1)
        return self.mlp_in(torch.cat([mixed, hand], dim=1))

    def forward(self, pooled: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
        return self.mlp_out(self.embed(pooled, hand))


class AdversarialTrainer(FrameTrainer):
    """:class:`AdversarialHead`: the emotion loss plus ``strength`` times the corpus classifier's
    cross-entropy (corpora weighted equally), whose gradient is reversed into the embedding; the
    reversal ramps up as ``2 / (1 + exp(-10 p)) - 1`` over training progress ``p``."""

    def __init__(self, frames: Frames, n_hand: int, corpus: np.ndarray, strength: float):
        super().__init__(frames, n_hand)
        self.corpus, self.strength = corpus, strength

    def prepare(self, rows):
        super().prepare(rows)
        self.pooled = self.standardised_pools(rows)
        names, ids = np.unique(self.corpus[rows], return_inverse=True)
        self.corpus_id = torch.zeros(len(self.corpus), dtype=torch.long)
        self.corpus_id[torch.from_numpy(rows)] = torch.from_numpy(ids)
        self.corpus_weight = torch.zeros(len(self.corpus))
        self.corpus_weight[torch.from_numpy(rows)] = torch.from_numpy(corpus_weights(self.corpus[rows])).float()
        self.n_corpora = len(names)

    def inputs(self, batch):
        return self.pooled[batch], self.hand[batch]

    def new_model(self):
        return AdversarialHead(n_layers=self.n_layers, d_model=self.d_model, n_hand=self.n_hand, n_corpora=self.n_corpora)

    def loss(self, model, chunk, batch, progress, t, a, w):
        embedding = model.embed(*self.inputs(chunk))
        emotion = _set_loss(model.mlp_out(embedding), t[chunk], a[chunk], RECIPE.label_smoothing)
        ramp = 2 / (1 + np.exp(-10 * progress)) - 1
        corpus = nn.functional.cross_entropy(model.corpus(GradientReversal.apply(embedding, ramp)), self.corpus_id[chunk], reduction="none")
        cw = self.corpus_weight
        return (w[chunk] * emotion).sum() / w[batch].sum() + self.strength * (cw[chunk] * corpus).sum() / cw[batch].sum()


def ua_and_false_alarms(probs8: np.ndarray, truth7: np.ndarray, speakers: np.ndarray) -> tuple[float, float]:
    """UA over the classes present in ``truth7``, and the angry false-alarm rate, of 8-class probabilities ``(n, 8)``."""
    score = score_corpus(probs8 @ voice.SHARED_SPACE, truth7, groups=speakers, n_resamples=1, seed=0)
    return score["closed"]["ua"], score["angry_false_alarm"]


def paired_ua_difference(probs_a: np.ndarray, probs_b: np.ndarray, truth7: np.ndarray, speakers: np.ndarray) -> str:
    """UA over the classes in ``truth7`` of ``probs_a`` minus that of ``probs_b`` (both ``(n, 8)``), with its interval."""
    classes = [c for c in EMOTIONS if c in set(truth7)]
    columns = [EMOTIONS.index(c) for c in classes]
    picked = [np.asarray(classes, dtype=object)[(p @ voice.SHARED_SPACE)[:, columns].argmax(axis=1)] for p in (probs_a, probs_b)]
    difference, (low, high) = metrics.paired_difference(truth7, *picked, labels=classes, groups=speakers, seed=0)
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tests", choices=("all", "corpora", "speakers"), default="all",
                        help="corpora: each corpus held out; speakers: the speaker-disjoint folds")
    parser.add_argument("--heads", nargs="+", choices=("attention", "top-block", "adversarial"), default=["attention", "top-block"])
    parser.add_argument("--adversarial-strength", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)

    manifest = training_manifest(corpus_folders(args.data))
    corpus = Corpus.load(manifest)
    started = time.perf_counter()
    frames = encode_frames(corpus, seed=0)
    print(f"frames: {len(frames.states)} over {len(frames.offsets) - 1} clips ({time.perf_counter() - started:.0f} s)")
    manifest = corpus.manifest
    targets, allowed = label_sets(manifest["label8"], manifest["corpus"])
    corpus_names = manifest["corpus"].to_numpy()
    speakers = manifest["speaker"].to_numpy()
    truth7 = _truth7(manifest)
    n_hand = len(voice.HAND_FEATURES)
    trainers: dict[str, FrameTrainer] = {}
    if "attention" in args.heads:
        trainers["attention MLP"] = AttentionTrainer(frames, n_hand)
    if "top-block" in args.heads:
        trainers["top-block MLP"] = TopBlockTrainer(frames, n_hand, load_openai_whisper(ENCODER_NAME).encoder.blocks[-1])
    if "adversarial" in args.heads:
        for strength in args.adversarial_strength:
            trainers[f"adversarial MLP {strength:g}"] = AdversarialTrainer(frames, n_hand, manifest["corpus"].to_numpy(), strength)
    clean_only = dataclasses.replace(RECIPE, augment=())

    systems = ["mean/std MLP", *trainers, "LR + mean/std MLP (packaged)", *(f"LR + {name}" for name in trainers)]
    results: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for seed in args.seeds:
        tests = []
        if args.tests in ("all", "corpora"):
            tests += [(f"{c} held out", corpus_names == c) for c in dict.fromkeys(corpus_names)]
        if args.tests in ("all", "speakers"):
            tests += [("speaker folds", np.isin(speakers, fold)) for fold in speaker_folds(manifest, folds=args.folds, seed=seed)]
        for name, test in tqdm(tests, desc=f"seed {seed}", unit="test set"):
            train = np.flatnonzero(~test)
            weights = np.ones(len(manifest))
            weights[train] = corpus_weights(corpus_names[train])
            head = fit_head(frames.features[train], targets[train], allowed=allowed[train], weights=weights[train],
                            seed=seed, recipe=clean_only)
            rows = np.flatnonzero(test)
            with torch.inference_mode():
                linear, mlp, _ = head(torch.from_numpy(frames.features[rows]))
            p_linear, p_mlp = torch.softmax(linear, 1).double().numpy(), torch.softmax(mlp, 1).double().numpy()
            assert np.allclose((p_linear + p_mlp) / 2, predict_head(head, frames.features[rows]), atol=1e-5)
            probs = {"mean/std MLP": p_mlp, "LR + mean/std MLP (packaged)": (p_linear + p_mlp) / 2}
            for system, trainer in trainers.items():
                model = trainer.fit(train, targets, allowed, weights, seed=seed)
                probs[system] = trainer.predict(model, rows)
                probs[f"LR + {system}"] = (p_linear + probs[system]) / 2
                log.info("%s seed %d, %s: layer weights %s", name, seed, system,
                         np.round(torch.softmax(model.layer_logits, 0).detach().numpy(), 3).tolist())
            store = results.setdefault((name, seed), {s: np.full((len(manifest), 8), np.nan) for s in systems})
            for system in systems:
                store[system][rows] = probs[system]
            log.info("%s seed %d: UA %s", name, seed, {system: round(ua_and_false_alarms(probs[system], truth7[rows], speakers[rows])[0], 3) for system in systems})

    print(f"\nUA over each corpus's own classes / angry false alarms (mean over seeds {args.seeds}; clean condition)\n")
    print("| test set | corpus | " + " | ".join(systems) + " |")
    print("|---|---|" + "---|" * len(systems))
    for name in dict.fromkeys(n for n, _ in results):
        for c in dict.fromkeys(corpus_names):
            cells = []
            for system in systems:
                ua, fa = [], []
                for seed in args.seeds:
                    p = results[(name, seed)][system]
                    rows = (corpus_names == c) & ~np.isnan(p).any(axis=1)
                    if rows.any():
                        score = ua_and_false_alarms(p[rows], truth7[rows], speakers[rows])
                        ua.append(score[0])
                        fa.append(score[1])
                if ua:
                    cells.append(f"{np.mean(ua):.3f} / {np.mean(fa):.3f}")
            if cells:
                print(f"| {name} | {c} | " + " | ".join(cells) + " |")
    pairs = [(name, "mean/std MLP") for name in trainers] + [(f"LR + {name}", "LR + mean/std MLP (packaged)") for name in trainers]
    print(f"\nPaired difference in UA over the corpus's own classes, 95% bootstrap interval over speakers (seed {args.seeds[0]})\n")
    print("| test set | corpus | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |")
    print("|---|---|" + "---|" * len(pairs))
    for name in dict.fromkeys(n for n, _ in results):
        for c in dict.fromkeys(corpus_names):
            store = results[(name, args.seeds[0])]
            rows = (corpus_names == c) & ~np.isnan(store["mean/std MLP"]).any(axis=1)
            if rows.any():
                cells = [paired_ua_difference(store[a][rows], store[b][rows], truth7[rows], speakers[rows]) for a, b in pairs]
                print(f"| {name} | {c} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
