"""Train the shipped default model, mini-clip: a small OpenCLIP-architecture model trained from
scratch on data that packages ship (digits, letters, emoji, shapes and colours, a few photos).

    python -m training.fetch_data        # once: npm emoji sets and Debian fonts into .cache/
    python -m training.train_default     # ~15 min on 2 CPU cores, seed 0, deterministic

The architecture is open_clip's own CLIP class (OpenAI's CLIP ResNet image tower, shrunk; a
causal text transformer pooled at the end-of-text token) with OpenAI CLIP's BPE vocabulary and a
context of 77, so the shipped model exercises the exact tokenizer and text path that real CLIP
checkpoints use, and the export goes through `clipserve export`'s open_clip loader with its
parity check. Captions are short, so training runs the text tower on the first L positions only
(L = longest caption in the batch): with the causal mask, the end-of-text position never sees
the padding after it, so this is the same function as the 77-token tower (checked in tests).

Every image goes through the service's own preprocessing (`service.imaging`) before training,
so what is served is what was trained. The loss is CLIP's symmetric contrastive loss, with
captions of the same thing (the same digit, emoji or scene) counted as positives. Held-out data
(`training.card`) never enters training: 1,000 MNIST digits, 360 scikit-learn digits, whole font
families, Twitter's drawings of 15% of the emoji, eight colour+shape pairs, four photos.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from service.imaging import Normalizer, prepare
from service.manifest import ImagePreprocess, load_manifest
from training import card as card_lib
from training import digits8x8, emoji, fetch_data, fonts, mnist, photos, shapes
from training.contrastive import contrastive_loss, optimizer_step

NAME = "mini-clip"
CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}
# Prompt templates of the captions ("{}" twice: bare names are a quarter of them). The model
# serves with the same wording (its manifest's templates, used by /v1/classify): a text tower
# this small does not carry unseen wordings well (measured: held-out templates cost 18 points of
# MNIST top-1 and 40 of text->image P@1). Only the images of the card are held out.
TRAIN_TEMPLATES = [
    "{}",
    "{}",
    "an image of {}",
    "a drawing of {}",
    "an icon of {}",
    "{} on white",
    "a small image of {}",
    "it shows {}",
]
TEMPLATES = list(dict.fromkeys(TRAIN_TEMPLATES))
# images per batch from each source (sums to the batch size)
QUOTAS = {"mnist": 40, "digits_8x8": 16, "fonts": 40, "emoji": 104, "shapes": 48, "photos": 8}
# A second, short schedule from the first one's weights (fresh optimizer, lower rate), weighted
# towards handwriting: after the first, MNIST top-1 was 0.889, below mnist-clip's 0.893.
DIGIT_QUOTAS = {"mnist": 96, "digits_8x8": 24, "fonts": 32, "emoji": 64, "shapes": 32, "photos": 8}
STEPS = 1200
STAGES = [(STEPS, 2e-3, QUOTAS), (250, 5e-4, DIGIT_QUOTAS)]  # (steps, peak rate, batch mix)
# One intra-op thread: these convolutions are too small to split well, two threads spin-wait on
# a shared machine (measured 1.5-4x the CPU time), and a fixed count keeps results bit-identical.
THREADS = 1
Sample = tuple[Image.Image, str, str]  # image, caption, key (same key: same thing shown)


def _templated(rng: random.Random, text: str) -> str:
    return rng.choice(TRAIN_TEMPLATES).format(text)


def _digit_caption(rng: random.Random, d: int, how: str) -> str:
    name = rng.choice([mnist.NAMES[d], str(d)])
    forms = [name, f"the number {name}", f"the digit {name}", f"a {how} {name}"]
    return _templated(rng, rng.choice(forms))


class Sources:
    """Draws training samples (with augmentation) from each source; the held-out parts of each
    set are never touched."""

    def __init__(self) -> None:
        self.mnist_images, self.mnist_labels = mnist.mnist()
        self.mnist_train = mnist.split(0)[1]
        self.ink, self.ink_labels = digits8x8.digits()
        self.ink_train = digits8x8.split(0)[1]
        self.fonts = fonts.fonts(held_out=False)
        self.concepts = emoji.concepts()
        self.emoji: list[tuple[Image.Image, emoji.Concept]] = []
        for c in self.concepts:
            styles = [emoji.TRAIN_STYLE] + ([] if c.held_out else [emoji.TEST_STYLE])
            for style in styles:
                for name in c.images:
                    self.emoji.append((emoji.on_white(emoji.image_path(style, name)), c))
        self.photos = {n: _shrunk(photos.photo(n)) for n in photos.training_names()}
        self.draw: dict[str, Callable[[random.Random], Sample]] = {
            "mnist": self._mnist,
            "digits_8x8": self._digits_8x8,
            "fonts": self._fonts,
            "emoji": self._emoji,
            "shapes": shapes.training_sample,
            "photos": self._photos,
        }

    def _mnist(self, rng: random.Random) -> Sample:
        i = self.mnist_train[rng.randrange(len(self.mnist_train))]
        d = int(self.mnist_labels[i])
        img = mnist.render(self.mnist_images[i], rng, augment=True)
        return img, _digit_caption(rng, d, "handwritten"), f"digit:{d}"

    def _digits_8x8(self, rng: random.Random) -> Sample:
        i = self.ink_train[rng.randrange(len(self.ink_train))]
        d = int(self.ink_labels[i])
        img = digits8x8.augmented(self.ink[i], rng)
        return img, _digit_caption(rng, d, rng.choice(["handwritten", "pixelated"])), f"digit:{d}"

    def _fonts(self, rng: random.Random) -> Sample:
        path = rng.choice(self.fonts)
        if rng.random() < 0.5:
            d = rng.randrange(10)
            img = fonts.augmented(str(d), rng, path)
            return img, _digit_caption(rng, d, rng.choice(["typed", "printed"])), f"digit:{d}"
        letter = rng.choice(fonts.LETTERS)
        upper = rng.random() < 0.5
        img = fonts.augmented(letter.upper() if upper else letter, rng, path)
        case = "capital" if upper else "small"
        forms = [f"the letter {letter}", f"a {case} letter {letter}", f"{case} {letter}"]
        return img, _templated(rng, rng.choice(forms)), f"letter:{letter}:{case}"

    def _emoji(self, rng: random.Random) -> Sample:
        picture, concept = self.emoji[rng.randrange(len(self.emoji))]
        scale = rng.uniform(0.55, 1.0)
        side = max(16, int(64 * scale))
        canvas = Image.new("RGB", (64, 64), (255, 255, 255))
        small = picture.resize((side, side), Image.Resampling.BILINEAR)
        canvas.paste(small, (rng.randint(0, 64 - side), rng.randint(0, 64 - side)))
        if concept.keywords and rng.random() < 0.3:
            text = rng.choice(concept.keywords)
            caption = rng.choice([text, f"{text} emoji", _templated(rng, text)])
        else:
            caption = rng.choice([concept.label, f"{concept.label} emoji"])
            caption = _templated(rng, caption)
        return canvas, caption, f"emoji:{concept.code}"

    def _photos(self, rng: random.Random) -> Sample:
        name = rng.choice(sorted(self.photos))
        img = self.photos[name]
        side = int(min(img.size) * rng.uniform(0.5, 1.0))
        x, y = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
        return (
            img.crop((x, y, x + side, y + side)),
            rng.choice(photos.CAPTIONS[name]),
            f"photo:{name}",
        )

    def batch(self, rng: random.Random, quotas: dict[str, int]) -> list[Sample]:
        return [self.draw[src](rng) for src, n in quotas.items() for _ in range(n)]


def _shrunk(img: Image.Image, side: int = 160) -> Image.Image:
    scale = side / min(img.size)
    size = (max(side, round(img.width * scale)), max(side, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


def create_model(seed: int) -> Any:
    """open_clip's CLIP built from CONFIG, registered under NAME so that open_clip (and so
    `clipserve export`) can load the checkpoint by name."""
    import open_clip

    with tempfile.TemporaryDirectory() as tmp:  # read into open_clip's registry at once
        (Path(tmp) / f"{NAME}.json").write_text(json.dumps(CONFIG))
        open_clip.add_model_config(tmp)
    torch.manual_seed(seed)
    return open_clip.create_model(NAME)


def encode_text_short(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's `encode_text` on the first L positions (ids padded to L only). With the causal
    mask and end-of-text pooling this equals the 77-token tower, at a fraction of the cost."""
    n = ids.shape[1]
    x = model.token_embedding(ids) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    pooled = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    return pooled @ model.text_projection


class Captions:
    """open_clip's own tokenizer, each distinct caption tokenized once."""

    def __init__(self) -> None:
        import open_clip

        self.tokenizer = open_clip.get_tokenizer(NAME)
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        for c in captions:
            if c not in self.cache:
                ids = self.tokenizer([c])[0].tolist()
                self.cache[c] = ids[: max(i for i, t in enumerate(ids) if t) + 1]
        longest = max(len(self.cache[c]) for c in captions)
        rows = [self.cache[c] + [0] * (longest - len(self.cache[c])) for c in captions]
        return torch.tensor(rows, dtype=torch.long)


def image_spec(model: Any) -> ImagePreprocess:
    from service.export.openclip import image_preprocess

    return image_preprocess(NAME, model)


def train(
    model: Any,
    steps: int,
    seed: int,
    sources: Sources | None = None,
    log_every: int = 50,
    lr: float = 2e-3,
    quotas: dict[str, int] = QUOTAS,
) -> float:
    """One schedule (warm-up then cosine decay); returns the seconds spent."""
    started = time.time()
    rng = random.Random(seed)
    sources = sources or Sources()
    captions = Captions()
    spec = image_spec(model)
    normalize = Normalizer(spec)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=0.08, anneal_strategy="cos"
    )
    print(f"data ready in {time.time() - started:.0f}s", flush=True)
    model.train()
    total = 0.0
    for step in range(1, steps + 1):
        samples = sources.batch(rng, quotas)
        x = torch.from_numpy(np.stack([normalize(prepare(img, spec)) for img, _, _ in samples]))
        ids = captions([c for _, c, _ in samples])
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(encode_text_short(model, ids), dim=-1)
        loss = contrastive_loss(img, txt, model.logit_scale.exp(), [k for _, _, k in samples])
        total += optimizer_step(model, opt, sched, loss)
        if step % log_every == 0 or step == steps:
            print(
                f"step {step}/{steps} loss {total / log_every:.3f} "
                f"scale {model.logit_scale.exp().item():.1f} ({time.time() - started:.0f}s)",
                flush=True,
            )
            total = 0.0
    model.eval()
    return time.time() - started


def final_weights(checkpoint: Path) -> Path:
    """Where the trained weights (all schedules) are kept, beside the first schedule's."""
    return checkpoint.with_name(f"{checkpoint.stem}-final{checkpoint.suffix}")


def train_stages(
    model: Any, args: argparse.Namespace, previous: list[dict[str, Any]]
) -> list[dict[str, float]]:
    """The schedules in order; the first one's weights are kept in --checkpoint, so that the
    rest can be re-run from them (`--resume`) with the same result as a whole run, and the
    final weights beside it (`--export-only`). Returns each schedule's wall and CPU minutes
    (data loading counted in the first; a resumed run keeps the first one's from `previous`,
    the card of the run that trained it)."""
    stages = [(args.steps, *STAGES[0][1:]), *STAGES[1:]]
    timing: list[dict[str, float]] = []
    started, cpu = time.time(), time.process_time()
    sources = Sources()
    if args.resume:
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True))
        timing.append(previous[0])
    for k, (steps, lr, quotas) in enumerate(stages):
        if k == 0 and args.resume:
            continue
        model.train()
        seconds = train(model, steps, args.seed + k, sources, lr=lr, quotas=quotas)
        print(f"schedule {k + 1}: {steps} steps in {seconds / 60:.1f} min", flush=True)
        timing.append(
            {
                "minutes": round((time.time() - started) / 60, 1),
                "cpu_minutes": round((time.process_time() - cpu) / 60, 1),
            }
        )
        started, cpu = time.time(), time.process_time()
        if k == 0:
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.checkpoint)
    torch.save(model.state_dict(), final_weights(args.checkpoint))
    return timing


def export(model: Any, out: Path, fp16: bool) -> None:
    """`clipserve export`'s pipeline (fused graphs, parity), then, for fp32, the int8 towers
    gated on every held-out set of the card, measured with the model's own templates. No
    uint8-input image variant: at 32 px an image is 12 KB as float32, so the variant saves
    nothing measurable, and its 5.5 MB would take the folder past 30 MB with the int8 towers."""
    from service.export import export_model
    from service.export.quantize import quantize_model

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / f"{NAME}.pt"
        torch.save(model.state_dict(), checkpoint)
        export_model(f"open_clip:{NAME}:{checkpoint}", out, fp16=fp16, uint8_variant=False)
        if fp16:
            return
        held_out = Path(tmp) / "held-out"
        card_lib.write_image_folders(held_out, card_lib.INT8_GATE_TASKS)
        manifest = load_manifest(out)
        manifest.templates = TEMPLATES
        quantize_model(out, manifest, held_out)
        manifest.write(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models") / NAME)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp16", action="store_true", help="export fp16 towers")
    parser.add_argument("--eval-only", action="store_true", help="re-measure an exported model")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=fetch_data.cache_dir().parent / f"{NAME}.pt",
        help="the first schedule's torch weights (for --resume); the final weights are kept "
        "beside it as <name>-final.pt (for --export-only)",
    )
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="export the final weights again and re-measure the card, without training",
    )
    parser.add_argument(
        "--resume", action="store_true", help="load the first schedule's --checkpoint, run the rest"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=Path("models/mnist-clip"),
        help="model measured beside it on the digit tasks (skipped when missing)",
    )
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    fetch_data.fetch()
    # the card of the run that trained the weights: its training times stay true when only the
    # export (--export-only, --eval-only) or the later schedules (--resume) are re-run
    previous = []
    if (args.out / "clipserve.json").is_file():
        previous = load_manifest(args.out).card.get("training", {}).get("schedules", [])
    if args.eval_only or args.export_only:
        timing = [{k: st[k] for k in ("minutes", "cpu_minutes")} for st in previous]
    if args.export_only:
        model = create_model(args.seed)
        model.load_state_dict(torch.load(final_weights(args.checkpoint), weights_only=True))
        model.eval()
        export(model, args.out, args.fp16)
    elif not args.eval_only:
        model = create_model(args.seed)
        timing = train_stages(model, args, previous)
        export(model, args.out, args.fp16)
    finalize(args, timing)


def finalize(args: argparse.Namespace, timing: list[dict[str, float]]) -> None:
    """Measure the exported model, then write its card and templates; `timing`: each
    schedule's wall and CPU minutes."""
    out: Path = args.out
    manifest = load_manifest(out)
    manifest.templates = TEMPLATES
    manifest.write(out)  # the card measures with the model's own templates
    tasks = card_lib.measure_all(out)
    baseline = None
    if (args.baseline / "clipserve.json").is_file():
        baseline = card_lib.measure_all(args.baseline, card_lib.DIGIT_TASKS)
    command = "python -m training.train_default"
    command += f" --seed {args.seed}" if args.seed else ""
    command += f" --steps {args.steps}" if args.steps != STEPS else ""
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    card = card_lib.card(tasks, baseline, args.baseline.name)
    if "int8" in manifest.parity:  # the int8 towers' report, and every task through them
        int8_tasks = card_lib.measure_all(out, precision="int8")
        card["int8"] = card_lib.int8_summary(manifest.parity["int8"], int8_tasks)
    card["training"] = {
        "command": command,
        "seed": args.seed,
        "steps": args.steps + sum(steps for steps, _, _ in STAGES[1:]),
        "schedules": [
            {"steps": steps, "peak_lr": lr, "batch_mix": quotas, **times}
            for (steps, lr, quotas), times in zip(
                [(args.steps, *STAGES[0][1:]), *STAGES[1:]], timing, strict=True
            )
        ],
        "batch": sum(QUOTAS.values()),
        "batch_mix": QUOTAS,
        "minutes_on_2_cpu_cores": round(sum(t["minutes"] for t in timing), 1),
        "cpu_minutes": round(sum(t["cpu_minutes"] for t in timing), 1),
        "templates": TRAIN_TEMPLATES,
        "architecture": card_lib.architecture(CONFIG),
        "folder_bytes": size,
    }
    manifest = load_manifest(out)
    manifest.card = card
    manifest.source = {
        **manifest.source,
        "pretrained": f"temporary checkpoint written by `{command}`",
    }
    manifest.write(out)
    card_lib.write_model_card(out, manifest.card)
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
