"""Command line (`mmu ...` or `python -m mmu ...`).

    mmu compare [--tokenizers a,b,...] [--dataset digits|natural|moving-digits|DIR] [--frames T] [--size N] [--steps N]
                [--batch-size N] [--codebook-size K] [--width W] [--out DIR] [--seed N]
                [--lpips-weights FILE] [--fid-weights FILE] [--fast] [--list]
    mmu train --config cfg.json --data DIR [--val-data DIR | --val-fraction F] [--steps N] [--out DIR]
              [--resume | --overwrite] [--tensorboard] [--sample-every N]   (mmu train --example-config)
    mmu train --model gpt [--data digits|shapes|digits,shapes|TEXTS.txt] [--steps N] [--out DIR] [--dim D]
              [--layers N] [--heads H] [--batch-size B] [--lr LR] [--samples N] [--config cfg.json] ...
    mmu generate --model DIR [--prompt TEXT ...] [--num-samples N] [--temperature T] [--top-k K] [--top-p P]
                 [--greedy] [--seed S] [--max-new-tokens N]
    mmu encode --model DIR IMAGES... --out codes.npy
    mmu decode --model DIR codes.npy --out DIR
    mmu demo [...]        mmu info        mmu --version

User errors (a missing folder, a bad config key, codes out of range) end with a one-line message on
stderr and exit status 1 (2 for bad command-line syntax); MMU_DEBUG=1 shows the traceback instead.
"""
import argparse
import contextlib
import json
import os
import sys
import warnings

TRAIN_CONFIG_HELP = """\
cfg.json names the tokenizer class of mmu.tokenizers and its config fields, the mmu.train.TrainConfig
fields, and how to load the images of --data (center crop + resize to `size`, `channels` 1 or 3;
"random_crop": true for torchvision-style random resized crops, "hflip": true for random flips):

  {
    "tokenizer": "VQVAE",
    "config": {"in_channels": 3, "quantizer": "fsq", "quantizer_kwargs": {"levels": [8, 6, 5]}, ...},
    "train": {"steps": 2000, "batch_size": 32, "lr": 0.0002},
    "data": {"size": 32, "channels": 3}
  }

Images: every .jpg .jpeg .png .bmp .webp .tif .tiff .gif under --data (case-insensitive, recursive,
hidden files skipped), streamed from disk. Held out (never trained on): --val-data DIR, else
--data's test/ subfolder, else a seeded --val-fraction (default 0.1); the model is evaluated on it
every train.eval_every steps (default steps/10) and at the end (PSNR, SSIM in history.csv and eval.json).

Only "tokenizer" is required; `mmu train --example-config` prints a complete one. The trained model is
saved with save_pretrained into --out (config.json + model.safetensors, load it back with
mmu.tokenizers.Tokenizer.from_pretrained(DIR) or use it with `mmu encode` / `mmu decode`), with
history.csv and loss_curves.png beside it, and checkpoints/ (the latest keep_last checkpoints; the
last one always holds the final or interrupted step).

A run owns its --out: a folder that holds a previous run (a model, history.csv, checkpoints, samples or
TensorBoard files) is refused unless --resume continues that run from its latest checkpoint (the model
and train config must be the same, apart from steps and the logging/checkpoint/sample settings; the
error names the fields that differ) or --overwrite deletes the previous run's files (only those mmu
train writes) and starts again. Ctrl-C stops after the current step, saves a checkpoint, the model,
history.csv and loss_curves.png, and tells how to resume (a second Ctrl-C stops at once). A loss that
becomes non-finite or exceeds train.max_loss (default 1e6) stops the run with an error; history.csv and
the earlier checkpoints are kept, no model is saved."""

LM_TRAIN_HELP = """\
With --model gpt, mmu train trains a small GPT (mmu.models.gpt) on texts: --data names built-in caption
sets (digits, shapes or digits,shapes: every caption of their training images; held out: their test
images') or a UTF-8 file with one text a line (a seeded tenth held out). A word-level tokenizer is
trained on the texts; --out gets the model with its tokenizer (mmu generate --model OUT writes texts),
history.csv, loss_curves.png, samples.txt (the captions it wrote, seeded) and checkpoints/.
--config cfg.json may hold {"config": {GPTConfig fields}, "train": {TrainConfig fields}}."""

DATA_SIDECAR = "mmu_data.json"  # {"size": .., "channels": ..}: how the model's training images were loaded


class UserError(Exception):
    """A mistake in the command's input: printed as one line, exit status 1."""


# --------------------------------------------------------------------------- parsers
def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="mmu", description="mmu: discrete visual tokenizers on a fast CPU core")
    parser.add_argument("--version", action="version", version=f"mmu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="train a small autoencoder on scikit-learn's digits and print its loss falling",
                   add_help=False)
    sub.add_parser("info", help="versions, threads and the oneDNN build in use")

    p = sub.add_parser("compare", help="train several tokenizers on the same data and budget, write a report",
                       description="Trains each tokenizer for the same number of steps on the same images, "
                                   "evaluates it on held-out images and writes a report folder: report.md, "
                                   "report.csv, reconstructions.png, loss_curves.png, usage.png, models/.")
    p.add_argument("--tokenizers", metavar="A,B,...",
                   help="comma-separated entries (default: the default set; --list shows all)")
    p.add_argument("--dataset", default="digits", metavar="digits|natural|moving-digits|DIR",
                   help="scikit-learn digits (default), natural-image crops, a folder of your images, or "
                        "moving-digits: clips of moving digits (video tokenizers on clips, image tokenizers per "
                        "frame; per-frame PSNR/SSIM and temporal error)")
    p.add_argument("--frames", type=_positive, metavar="T",
                   help="frames a clip with --dataset moving-digits (default 9; --fast: 5)")
    p.add_argument("--size", type=_positive,
                   help="image side in pixels (default 16 for digits, 32 for natural, folders and moving-digits)")
    p.add_argument("--steps", type=_positive,
                   help="training steps per tokenizer (default 1500, moving-digits 1000; --fast: 3)")
    p.add_argument("--batch-size", type=_positive,
                   help="batch size of every tokenizer (default 32; moving-digits: 4 clips, an image tokenizer "
                        "gets their frames; --fast: 8, 4 clips)")
    p.add_argument("--codebook-size", type=_positive, metavar="K",
                   help="codebook size of every entry (default: each entry's own, about 256); FSQ takes the "
                        "paper's levels for 2^8, 2^10, ..., 2^16 codes, LFQ needs a power of 2")
    p.add_argument("--width", type=_positive, metavar="W",
                   help="channels of the widest encoder/decoder conv of every entry (VQ-VAE/dVAE "
                        "hidden_channels; VQGAN ch x max(ch_mult)); default: each entry's own")
    p.add_argument("--out", default="mmu-report", metavar="DIR", help="report folder (default mmu-report)")
    p.add_argument("--seed", type=_nonneg, default=0, help="seeds the data split, the models and the batches")
    p.add_argument("--lpips-weights", metavar="FILE",
                   help="LPIPS weights (mmu.losses.lpips.convert_torch_weights): VQGAN gets its perceptual "
                        "loss and the table an LPIPS column")
    p.add_argument("--fid-weights", metavar="FILE",
                   help="FID Inception weights (mmu.metrics.inception.convert_torch_weights of pytorch-fid's "
                        "pt_inception-2015-12-05): the table gets an rFID column (slow: 299 px Inception)")
    p.add_argument("--threads", type=_positive, default=1,
                   help="mmu threads (default 1: these small models run fastest on one thread per process)")
    p.add_argument("--fast", action="store_true", help="tiny models, a few steps: a smoke test in seconds")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--list", action="store_true", help="list the available tokenizers and exit")

    p = sub.add_parser("train", help="train a tokenizer from a JSON config on a folder of images, or a language "
                                     "model on texts (--model gpt)",
                       description="Trains the tokenizer cfg.json describes on the images of --data.",
                       epilog=TRAIN_CONFIG_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="cfg.json", help="the tokenizer + training config (format below)")
    p.add_argument("--data", metavar="DIR", help="a folder of images (its test/ subfolder is held out)")
    p.add_argument("--val-data", metavar="DIR", help="held-out images (default: DIR/test, else --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="without --val-data or DIR/test: hold out this seeded fraction of the images (default 0.1)")
    p.add_argument("--steps", type=_positive, help="override the config's train.steps")
    p.add_argument("--out", default="mmu-model", metavar="DIR", help="where the model is saved (default mmu-model)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its latest checkpoint (same config; --steps may grow)")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the previous run's files in --out (only those mmu train writes) and start anew")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to --out/tensorboard in TensorBoard's format (tensorboard --logdir OUT/tensorboard)")
    p.add_argument("--sample-every", type=_nonneg, metavar="N",
                   help="every N steps save originals vs reconstructions to --out/samples/step_N.png "
                        "(overrides train.sample_every; 0: never)")
    p.add_argument("--threads", type=_positive, help="mmu.set_num_threads(N) first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--example-config", action="store_true", help="print an example cfg.json and exit")
    lm = p.add_argument_group("language model (--model gpt)", LM_TRAIN_HELP)
    lm.add_argument("--model", metavar="NAME", help="train a language model instead of a tokenizer: gpt")
    lm.add_argument("--dim", type=_positive, help="width (default 64)")
    lm.add_argument("--layers", type=_positive, help="transformer layers (default 2)")
    lm.add_argument("--heads", type=_positive, help="attention heads (default 4)")
    lm.add_argument("--batch-size", type=_positive, help="texts per step (default 32)")
    lm.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    lm.add_argument("--seed", type=_nonneg, help="seeds the model, the batches and the samples (default 0)")
    lm.add_argument("--samples", type=_nonneg, help="captions written after training (default 16)")
    lm.add_argument("--temperature", type=float, help="sampling temperature of those captions (default 1)")
    lm.add_argument("--top-k", type=_positive, help="keep the k most likely tokens when sampling")
    lm.add_argument("--top-p", type=float, help="nucleus sampling: keep the most likely tokens up to this mass")

    p = sub.add_parser("generate", help="texts written by a language model trained with mmu train --model gpt",
                       description="Loads a GPT folder (save_pretrained, with its tokenizer) and prints the texts "
                                   "it writes, one a line.")
    p.add_argument("--model", required=True, metavar="DIR", help="a folder written by mmu train --model gpt")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="start the texts with TEXT (repeat for several prompts; default: from nothing)")
    p.add_argument("--num-samples", type=_positive, default=8, metavar="N", help="texts per prompt (default 8)")
    p.add_argument("--max-new-tokens", type=_positive, metavar="N",
                   help="at most N new tokens a text (default: up to the model's max_seq_len)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=_positive, help="keep the k most likely tokens")
    p.add_argument("--top-p", type=float, help="keep the most likely tokens up to this probability mass")
    p.add_argument("--greedy", action="store_true", help="always the most likely token (no sampling)")
    p.add_argument("--seed", type=_nonneg, default=0, help="the sampling seed (default 0): a seed reproduces the texts")
    p.add_argument("--threads", type=_positive, help="mmu.set_num_threads(N) first")

    p = sub.add_parser("showo", help="Show-o-tiny on the built-in captioned sets: train, generate images, answer",
                       description="mmu showo train | generate | answer (mmu.models.show_o.tiny).")
    showo = p.add_subparsers(dest="showo_command", metavar="ACTION")
    q = showo.add_parser("train", help="train Show-o-tiny (a VQ-VAE image tokenizer first); "
                         "benchmarks/eval_show_o_tiny.py judges it")
    q.add_argument("--data", default="digits", metavar="digits|shapes|digits,shapes", help="the captioned sets")
    d = " (default: the set's preset, mmu.models.show_o.tiny.PRESETS)"
    q.add_argument("--steps", type=_positive, help="Show-o training steps" + d)
    q.add_argument("--tokenizer-steps", type=_nonneg, help="image tokenizer steps" + d)
    q.add_argument("--batch-size", type=_positive, help="rows a step" + d)
    q.add_argument("--dim", type=_positive, help="model width" + d)
    q.add_argument("--layers", type=_positive, help="transformer layers" + d)
    q.add_argument("--size", type=_positive, help="image side in px" + d)
    q.add_argument("--downsample", type=_positive, help="image tokenizer downsampling: a (size/N)^2 token grid" + d)
    q.add_argument("--tokenizer-quantizer", choices=("lfq", "ema_vq"), help="the image tokenizer's quantizer" + d)
    q.add_argument("--codebook-size", type=_positive, help="image codes (a power of 2 for lfq)" + d)
    q.add_argument("--seed", type=_nonneg, default=0, help="seeds everything (default 0)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for the checkpoints and the model")
    q.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("--threads", type=_positive, help="mmu.set_num_threads(N) first")
    q = showo.add_parser("generate", help="PNG images from a prompt with a trained Show-o-tiny")
    q.add_argument("--model", required=True, metavar="DIR", help="a folder written by mmu showo train")
    q.add_argument("--prompt", required=True, action="append", metavar="TEXT", help="the caption (repeatable)")
    q.add_argument("--num-samples", type=_positive, default=4, metavar="N", help="images per prompt (default 4)")
    q.add_argument("--steps", type=_positive, default=8, help="MaskGIT steps (default 8)")
    q.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance w (default 2)")
    q.add_argument("--seed", type=_nonneg, default=0, help="sampling seed (default 0)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    q = showo.add_parser("answer", help="answer a question about an image with a trained Show-o-tiny")
    q.add_argument("--model", required=True, metavar="DIR", help="a folder written by mmu showo train")
    q.add_argument("--image", required=True, metavar="PNG", help="an image file (resized to the model's image size)")
    q.add_argument("--question", default="what digit is this?", help="the question (default 'what digit is this?')")

    p = sub.add_parser("vila-u", help="VILA-U-tiny on the built-in captioned sets: train, generate images, answer",
                       description="mmu vila-u train | generate | answer (mmu.models.vila_u.tiny).")
    vila = p.add_subparsers(dest="vila_command", metavar="ACTION")
    q = vila.add_parser("train", help="train VILA-U-tiny (the vision tower first: align, then tower)")
    q.add_argument("--data", default="digits", metavar="digits|shapes|digits,shapes", help="the captioned sets")
    q.add_argument("--steps", type=_positive, default=1200, help="VILA-U training steps (default 1200)")
    q.add_argument("--tower-steps", type=_positive, default=1200,
                   help="vision tower steps, half 'align' and half 'tower' (default 1200)")
    q.add_argument("--batch-size", type=_positive, default=32, help="rows a step (default 32)")
    q.add_argument("--dim", type=_positive, default=128, help="model width (default 128)")
    q.add_argument("--layers", type=_positive, default=2, help="transformer layers (default 2)")
    q.add_argument("--seed", type=_nonneg, default=0, help="seeds everything (default 0)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for the tower, the checkpoints and the model")
    q.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("--threads", type=_positive, help="mmu.set_num_threads(N) first")
    q = vila.add_parser("generate", help="PNG images from a prompt with a trained VILA-U-tiny")
    q.add_argument("--model", required=True, metavar="DIR", help="a folder written by mmu vila-u train")
    q.add_argument("--prompt", required=True, action="append", metavar="TEXT", help="the caption (repeatable)")
    q.add_argument("--num-samples", type=_positive, default=4, metavar="N", help="images per prompt (default 4)")
    q.add_argument("--cfg-scale", type=float, help="classifier-free guidance s (default: the model's)")
    q.add_argument("--seed", type=_nonneg, default=0, help="sampling seed (default 0)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    q = vila.add_parser("answer", help="answer a question about an image with a trained VILA-U-tiny")
    q.add_argument("--model", required=True, metavar="DIR", help="a folder written by mmu vila-u train")
    q.add_argument("--image", required=True, metavar="PNG", help="an image file (resized to 16 px)")
    q.add_argument("--question", default="what digit is this?",
                   help="the question (default 'what digit is this?'; '' captions the image)")

    p = sub.add_parser("encode", help="images -> codes (.npy, int64) with a trained tokenizer")
    p.add_argument("--model", required=True, metavar="DIR", help="a save_pretrained folder")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files and/or folders of images")
    p.add_argument("--out", required=True, metavar="codes.npy", help="output .npy file (N, h, w) int64")
    p.add_argument("--size", type=_positive, help="image side (default: the model's training size)")

    p = sub.add_parser("decode", help="codes (.npy) -> PNG images with a trained tokenizer")
    p.add_argument("--model", required=True, metavar="DIR", help="a save_pretrained folder")
    p.add_argument("codes", metavar="codes.npy", help="codes written by `mmu encode` (or any int array)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    return parser


# --------------------------------------------------------------------------- compare
def cmd_compare(args):
    from . import compare as C

    if args.list:
        width = max(len(n) for n in C.REGISTRY)
        for name, desc, default in C.available():
            print(f"{name:<{width}}  {'*' if default else ' '} {desc}")
        print("\n* in the default set")
        return 0
    names = None
    if args.tokenizers:
        names = [n.strip() for n in args.tokenizers.split(",") if n.strip()]
        unknown = [n for n in names if n not in C.REGISTRY]
        if unknown:
            raise UserError(f"unknown tokenizer(s) {', '.join(unknown)} (available: {', '.join(C.REGISTRY)})")
    if args.dataset not in ("digits", "natural") + C.VIDEO_DATASETS and not os.path.isdir(args.dataset):
        raise UserError(f"--dataset must be digits, natural, moving-digits or an existing folder, got "
                        f"{args.dataset!r}")
    if args.frames is not None and args.dataset not in C.VIDEO_DATASETS:
        raise UserError(f"--frames applies to --dataset moving-digits, not {args.dataset!r}")
    if args.dataset in C.VIDEO_DATASETS and (args.lpips_weights or args.fid_weights):
        raise UserError("--lpips-weights and --fid-weights apply to the image datasets, not moving-digits")
    if args.lpips_weights and not os.path.isfile(args.lpips_weights):
        raise UserError(f"--lpips-weights: no such file {args.lpips_weights!r}")
    if args.fid_weights and not os.path.isfile(args.fid_weights):
        raise UserError(f"--fid-weights: no such file {args.fid_weights!r}")
    C.compare(names, dataset=args.dataset, size=args.size, steps=args.steps, batch_size=args.batch_size,
              seed=args.seed, out_dir=args.out, fast=args.fast, progress=not args.quiet,
              lpips_weights=args.lpips_weights, threads=args.threads, codebook_size=args.codebook_size,
              width=args.width, fid_weights=args.fid_weights, frames=args.frames)
    return 0


# --------------------------------------------------------------------------- train
def example_config():
    """A complete cfg.json for `mmu train` (a VQ-VAE with FSQ on 32 px RGB images)."""
    from . import compare as C

    entry = C.REGISTRY["vqvae-fsq"](3, 32, False)
    return {"tokenizer": entry.tokenizer, "config": entry.config,
            "train": {"steps": 2000, "batch_size": 32, "lr": 2e-4, "warmup_steps": 100, "log_every": 20,
                      "ckpt_every": 500, "seed": 0},
            "data": {"size": 32, "channels": 3}}


def _dataclass_keys(cls):
    import dataclasses
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else None


def _check_keys(given, cls, where):
    known = _dataclass_keys(cls)
    if known is None:
        return
    bad = [k for k in given if k not in known]
    if bad:
        raise UserError(f"unknown key(s) {', '.join(map(repr, bad))} in {where} (known: {', '.join(known)})")


def _read_json_object(path):
    """The JSON object in the --config file at path; UserError when it is missing, not JSON or not an object."""
    if not os.path.isfile(path):
        raise UserError(f"--config: no such file {path!r}")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: the top level must be a JSON object")
    return cfg


def load_train_config(path):
    """Reads and checks cfg.json; returns (tokenizer class, config dict, train dict, data dict)."""
    from . import tokenizers, train

    cfg = _read_json_object(path)
    bad = [k for k in cfg if k not in ("tokenizer", "config", "train", "data")]
    if bad:
        raise UserError(f"{path}: unknown key(s) {', '.join(map(repr, bad))} (known: tokenizer, config, train, data)")
    name = cfg.get("tokenizer")
    if not isinstance(name, str):
        raise UserError(f"{path}: \"tokenizer\" must name a tokenizer class, e.g. \"VQVAE\"")
    cls = getattr(tokenizers, name, None)
    base = getattr(tokenizers, "Tokenizer", None)
    if not isinstance(cls, type) or (base is not None and not issubclass(cls, base)):
        known = [n for n in dir(tokenizers) if isinstance(getattr(tokenizers, n), type) and base is not None
                 and issubclass(getattr(tokenizers, n), base) and getattr(tokenizers, n) is not base]
        raise UserError(f"{path}: unknown tokenizer {name!r} (known: {', '.join(known)})")
    sections = {}
    for key in ("config", "train", "data"):
        v = cfg.get(key, {})
        if not isinstance(v, dict):
            raise UserError(f"{path}: \"{key}\" must be a JSON object, got {type(v).__name__}")
        sections[key] = dict(v)
    config_cls = getattr(cls, "config_class", None) or getattr(tokenizers, name + "Config", None)
    _check_keys(sections["config"], config_cls, f"{path} \"config\" ({name})")
    _check_keys(sections["train"], train.TrainConfig, f"{path} \"train\" (TrainConfig)")
    data_keys = ("size", "channels", "random_crop", "hflip")
    bad = [k for k in sections["data"] if k not in data_keys]
    if bad:
        raise UserError(f"{path}: unknown key(s) {', '.join(map(repr, bad))} in \"data\" (known: {', '.join(data_keys)})")
    for k in ("random_crop", "hflip"):
        if not isinstance(sections["data"].get(k, False), bool):
            raise UserError(f"{path}: data.{k} must be true or false, got {sections['data'][k]!r}")
    return cls, sections["config"], sections["train"], sections["data"]


def _check_out_dir(out):
    """--out must be a folder we can create or write into; checked before any work is done."""
    probe = os.path.abspath(out)
    while not os.path.exists(probe):  # the nearest existing ancestor decides
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"--out: {out!r} is not a folder ({probe!r} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out: cannot write into {probe!r}")


LM_ONLY_FLAGS = ("dim", "layers", "heads", "batch_size", "lr", "seed", "samples", "temperature", "top_k", "top_p")
LM_MODELS = ("gpt",)


def cmd_train(args):
    if args.model is not None:
        return cmd_train_lm(args)
    given = [f"--{f.replace('_', '-')}" for f in LM_ONLY_FLAGS if getattr(args, f, None) is not None]
    if given:
        raise UserError(f"{', '.join(given)} go with --model gpt (a tokenizer takes them from --config)")
    if args.example_config:
        print(json.dumps(example_config(), indent=2))
        return 0
    if not args.config or not args.data:
        raise UserError("train needs --config cfg.json and --data DIR (or --example-config)")
    import time

    import mmu
    from . import data, train

    cls, fields, tfields, dfields = load_train_config(args.config)
    if os.path.abspath(args.config) == os.path.abspath(os.path.join(args.out, "config.json")):
        raise UserError(f"--config {args.config!r} is where the trained model's config.json goes; keep cfg.json "
                        "outside --out")
    if not os.path.isdir(args.data):
        raise UserError(f"--data: no such folder {args.data!r}")
    if args.val_data is not None and not os.path.isdir(args.val_data):
        raise UserError(f"--val-data: no such folder {args.val_data!r}")
    if not 0.0 < args.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    _check_out_dir(args.out)  # before training: a run must not be lost to an unusable --out
    size = dfields.get("size", 32)
    channels = dfields.get("channels", fields.get("in_channels", 3))
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise UserError(f"{args.config}: data.size must be an integer >= 4, got {size!r}")
    if channels not in (1, 3):
        raise UserError(f"{args.config}: data.channels must be 1 or 3, got {channels!r}")
    config_keys = _dataclass_keys(getattr(cls, "config_class", None)
                                  or getattr(mmu.tokenizers, cls.__name__ + "Config", None)) or []
    if "in_channels" in config_keys:
        fields.setdefault("in_channels", channels)
    if "resolution" in config_keys:
        fields.setdefault("resolution", size)
    if args.steps is not None:
        tfields["steps"] = args.steps
    if "steps" not in tfields:
        raise UserError(f"{args.config}: give train.steps (or --steps N)")
    tfields.setdefault("progress", not args.quiet)
    # every run keeps checkpoints in --out (an interrupted run leaves a resumable one even with ckpt_every 0)
    tfields.setdefault("ckpt_dir", os.path.join(args.out, "checkpoints"))
    if args.sample_every is not None:
        tfields["sample_every"] = args.sample_every
    if tfields.get("sample_every"):
        tfields.setdefault("sample_dir", os.path.join(args.out, "samples"))
    if args.tensorboard:
        tfields["tensorboard_dir"] = os.path.join(args.out, "tensorboard")
    previous = _previous_run(args.out, tfields["ckpt_dir"])
    if previous and not (args.resume or args.overwrite):
        raise UserError(f"--out {args.out!r} already holds a run ({', '.join(previous)}); pass --resume to "
                        "continue it, --overwrite to replace it, or choose another --out")
    if args.resume:
        if not train.Trainer.checkpoints(tfields["ckpt_dir"]):
            raise UserError(f"--resume: no checkpoint in {tfields['ckpt_dir']!r} to continue from")
        _check_same_data(args.out, size, channels)
    _threads(args)
    with _warnings_to_stderr("train"):
        dataset, heldout = data.load_splits(args.data, size, seed=int(tfields.get("seed", 0)),
                                            test_fraction=args.val_fraction, held_out=args.val_data,
                                            channels=channels, random_crop=dfields.get("random_crop", False))
    tfields["batch_size"] = min(int(tfields.get("batch_size", 32)), len(dataset))
    tfields.setdefault("eval_every", max(1, int(tfields["steps"]) // 10))
    mmu.manual_seed(int(tfields.get("seed", 0)))
    try:
        model = cls(**fields)
        tcfg = train.TrainConfig(**tfields)
    except (TypeError, ValueError) as e:
        raise UserError(f"{args.config}: {e}") from None
    if args.overwrite and previous and _rank() == 0:
        removed = _remove_run(args.out, tcfg.ckpt_dir)
        print(f"mmu train: --overwrite: removed {removed} file(s) of the previous run in {args.out}")
    loader = data.DataLoader(dataset, tcfg.batch_size, shuffle=True, seed=tcfg.seed,
                             hflip=dfields.get("hflip", False))
    eval_loader = data.DataLoader(heldout, 64, shuffle=False, drop_last=False)
    with _warnings_to_stderr("train"):
        if args.resume:
            try:
                trainer = train.Trainer.resume(tcfg.ckpt_dir, model, loader, tcfg, eval_data=eval_loader)
            except ValueError as e:  # another config, another dataset size: one line naming what differs
                raise UserError(f"--resume: {str(e).replace('Trainer.load_checkpoint: ', '')}") from None
            if trainer.step >= tcfg.steps:
                print(f"mmu train: the run in {args.out} is at step {trainer.step} of {tcfg.steps}: nothing to "
                      "train (pass --steps N to train further)")
                return 0
        else:
            trainer = train.Trainer(model, loader, tcfg, eval_data=eval_loader)
    if trainer.is_main_process:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, DATA_SIDECAR), "w") as f:
            json.dump({"dataset": os.path.abspath(args.data), "size": size, "channels": channels,
                       "train": dataset.split, "held_out": heldout.split}, f)
    print(f"mmu train: {cls.__name__} ({model.num_parameters():,} parameters) at {size} px, {tcfg.steps} steps x "
          f"batch {tcfg.batch_size}" + (f", resumed at step {trainer.step}" if args.resume else "")
          + f"\n  train: {dataset.split}\n  held out: {heldout.split}")
    start = time.perf_counter()
    main = trainer.is_main_process   # under mpirun rank 0 alone evaluates and writes (the others print nothing)
    with _warnings_to_stderr("train"):
        try:
            history = trainer.fit()
        except KeyboardInterrupt:
            if not main:
                return 130
            _save_outputs(args.out, model, trainer.history)
            last = train.Trainer.checkpoints(tcfg.ckpt_dir)
            exact = bool(last) and last[-1].endswith(f"ckpt_{trainer.step:08d}.safetensors")
            how = (f"continue with the same command and --resume (checkpoint {last[-1]})" if exact else
                   f"stopped mid-step: the model may hold part of step {trainer.step + 1}; --resume continues "
                   f"from {last[-1] if last else 'nothing (no checkpoint was written)'}")
            print(f"mmu train: interrupted at step {trainer.step} of {tcfg.steps}; saved the model, history.csv "
                  f"and loss_curves.png to {args.out}; {how}", file=sys.stderr)
            return 130
        except train.TrainingDiverged as e:
            if main:
                _save_outputs(args.out, None, trainer.history)
            last = train.Trainer.checkpoints(tcfg.ckpt_dir)
            raise UserError(f"{str(e).replace('Trainer: ', '')} No model saved; history.csv is in {args.out}"
                            + (f", the latest checkpoint before it is {last[-1]}" if last else "")) from None
        records = [r for r in getattr(history, "records", []) if "eval_psnr" in r]
        final = records[-1] if records and records[-1].get("step") == trainer.step else None
        if final is None:  # the held-out numbers of the final weights, when the last eval step was earlier
            final = {"step": trainer.step, **trainer.evaluate()}   # (every rank: none waits long for rank 0)
            history.log(final)
        if not main:
            _barrier()   # until rank 0 has written the final checkpoint and the outputs
            return 0
    seconds = time.perf_counter() - start
    if trainer._saved_step != trainer.step:  # the final state is resumable too (--resume --steps N goes on)
        trainer.save_checkpoint(trainer._ckpt_path(trainer.step))
        trainer._prune()
    _save_outputs(args.out, model, history)
    ev = {"step": int(final["step"]), "train": dataset.split, "held_out": heldout.split,
          "heldout_images": len(heldout), **{k: float(v) for k, v in final.items() if k.startswith("eval_")}}
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(ev, f, indent=2)
    ssim = f", SSIM {ev['eval_ssim']:.3f}" if "eval_ssim" in ev else ""
    print(f"trained in {seconds:.1f} s; held out ({len(heldout)} images, never trained on): PSNR "
          f"{ev['eval_psnr']:.2f} dB{ssim} at step {ev['step']}; saved to {args.out}")
    _barrier()
    return 0


def _lm_config_file(path):
    """--config of a language model: {"config": {GPTConfig fields}, "train": {TrainConfig fields}}."""
    from . import train
    from .models.gpt import GPTConfig

    cfg = _read_json_object(path)
    bad = [k for k in cfg if k not in ("config", "train")]
    if bad:
        raise UserError(f"{path}: unknown key(s) {', '.join(map(repr, bad))} for --model gpt (known: config, train)")
    out = {}
    for key, cls in (("config", GPTConfig), ("train", train.TrainConfig)):
        v = cfg.get(key, {})
        if not isinstance(v, dict):
            raise UserError(f"{path}: \"{key}\" must be a JSON object, got {type(v).__name__}")
        _check_keys(v, cls, f"{path} \"{key}\" ({cls.__name__})")
        out[key] = dict(v)
    return out["config"], out["train"]


def cmd_train_lm(args):
    """mmu train --model gpt: mmu.models.gpt.train_captions on built-in caption sets or a text file."""
    if args.model not in LM_MODELS:
        raise UserError(f"--model: unknown language model {args.model!r} (available: {', '.join(LM_MODELS)}; "
                        "tokenizers train from --config without --model)")
    tokenizer_flags = (("--val-data", args.val_data), ("--tensorboard", args.tensorboard or None),
                       ("--sample-every", args.sample_every), ("--example-config", args.example_config or None))
    bad = [flag for flag, v in tokenizer_flags if v is not None]
    if bad:
        raise UserError(f"{', '.join(bad)} are for tokenizers, not --model {args.model}")
    from . import train
    from .models.gpt import captions

    fields, tfields = _lm_config_file(args.config) if args.config else ({}, {})
    data = args.data or "digits"
    texts, sets = None, None
    if os.path.isfile(data):
        try:
            with open(data, encoding="utf-8") as f:
                texts = [line.strip() for line in f if line.strip()]
        except UnicodeDecodeError as e:
            raise UserError(f"--data {data!r} is not UTF-8 text: {e}") from None
        if not texts:
            raise UserError(f"--data {data!r} holds no text (one text a line)")
    else:
        sets = tuple(s.strip() for s in data.split(",") if s.strip())
        if not sets or any(s not in captions.CAPTION_SETS for s in sets):
            raise UserError(f"--data must name caption sets ({', '.join(captions.CAPTION_SETS)}, comma-separated) "
                            f"or a text file, got {data!r}")
    _check_out_dir(args.out)
    ckpt_dir = tfields.setdefault("ckpt_dir", os.path.join(args.out, "checkpoints"))
    previous = _previous_run(args.out, ckpt_dir)
    if previous and not (args.resume or args.overwrite):
        raise UserError(f"--out {args.out!r} already holds a run ({', '.join(previous)}); pass --resume to "
                        "continue it, --overwrite to replace it, or choose another --out")
    if args.resume and not train.Trainer.checkpoints(ckpt_dir):
        raise UserError(f"--resume: no checkpoint in {ckpt_dir!r} to continue from")
    if args.overwrite and previous and _rank() == 0:
        removed = _remove_run(args.out, ckpt_dir)
        print(f"mmu train: --overwrite: removed {removed} file(s) of the previous run in {args.out}")
    def take(flag_value, section, key, default):
        # a flag wins over cfg.json, which wins over the default; the key leaves the section either way
        v = section.pop(key, default)
        return v if flag_value is None else flag_value

    steps, batch_size = take(args.steps, tfields, "steps", 300), take(args.batch_size, tfields, "batch_size", 32)
    lr, seed = take(args.lr, tfields, "lr", 3e-3), take(args.seed, tfields, "seed", 0)
    dim, layers = take(args.dim, fields, "dim", 64), take(args.layers, fields, "num_layers", 2)
    heads = take(args.heads, fields, "num_heads", 4)
    _threads(args)
    with _warnings_to_stderr("train"):
        try:
            captions.train_captions(
                sets=sets or ("digits",), texts=texts, steps=steps, batch_size=batch_size, lr=lr, dim=dim,
                num_layers=layers, num_heads=heads, seed=seed, config=fields, train=tfields,
                num_samples=16 if args.samples is None else args.samples,
                temperature=1.0 if args.temperature is None else args.temperature, top_k=args.top_k,
                top_p=args.top_p, out=args.out, resume=args.resume, progress=not args.quiet, verbose=True)
        except KeyboardInterrupt:
            last = train.Trainer.checkpoints(ckpt_dir)
            print(f"mmu train: interrupted; " + (f"continue with the same command and --resume (checkpoint {last[-1]})"
                                                 if last else "no checkpoint was written"), file=sys.stderr)
            return 130
        except train.TrainingDiverged as e:
            raise UserError(f"{str(e).replace('Trainer: ', '')} No model saved") from None
        except TypeError as e:  # a config field of the wrong type
            raise UserError(str(e)) from None
    print(f"saved to {args.out} (model, tokenizer, history.csv, samples.txt); mmu generate --model {args.out} "
          "writes more")
    return 0


def cmd_generate(args):
    """mmu generate: the texts a saved GPT writes, one a line."""
    from .models.gpt import GPT

    path = args.model
    if not os.path.isdir(path):
        raise UserError(f"--model: no such folder {path!r}")
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if not os.path.isfile(os.path.join(path, f)):
            raise UserError(f"--model: {path!r} has no {f} (a folder written by mmu train --model gpt, or "
                            "GPT.save_pretrained with a tokenizer)")
    try:
        model = GPT.from_pretrained(path)
    except ValueError as e:
        raise UserError(f"--model {path!r}: {e}") from None
    _threads(args)
    model.eval()
    try:
        texts = model.generate_text(prompts=args.prompt, num_samples=args.num_samples,
                                    max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
                                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except TypeError as e:
        raise UserError(str(e)) from None
    for t in texts:
        print(t)
    return 0


@contextlib.contextmanager
def _warnings_to_stderr(command):
    """Library warnings (e.g. skipped unreadable images) as one 'mmu CMD: warning: ...' line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for w in caught:
                # deprecations are for developers and Python hides them by default; some are also
                # UserWarnings (pyparsing's, raised inside older matplotlib's mathtext on every plot)
                if not issubclass(w.category, DeprecationWarning):
                    print(f"mmu {command}: warning: {w.message}", file=sys.stderr)

# what `mmu train` writes into --out (the sidecar alone does not make a folder a run: it is rewritten)
RUN_FILES = ("config.json", "model.safetensors", "history.csv", "loss_curves.png")
RUN_PATTERNS = (("samples", r"^step_\d+\.png$"), ("tensorboard", r"^events\.out\.tfevents\..+"))


def _run_files(out, ckpt_dir):
    """[(path, label)] of the files a previous `mmu train` run left in out (and its ckpt_dir)."""
    import re

    from .train.trainer import _CKPT_RE, _CKPT_TMP_RE

    found = [(os.path.join(out, f), f) for f in RUN_FILES if os.path.isfile(os.path.join(out, f))]
    folders = [(ckpt_dir, (_CKPT_RE, _CKPT_TMP_RE))]
    folders += [(os.path.join(out, sub), (re.compile(pat),)) for sub, pat in RUN_PATTERNS]
    for folder, patterns in folders:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if any(p.match(name) for p in patterns) and os.path.isfile(os.path.join(folder, name)):
                found.append((os.path.join(folder, name), os.path.relpath(folder, out) + "/"))
    return found


def _previous_run(out, ckpt_dir):
    """The labels (file names, folder/) of a previous run's files in out, without repeats."""
    labels = []
    for _, label in _run_files(out, ckpt_dir):
        if label not in labels:
            labels.append(label)
    return labels


def _remove_run(out, ckpt_dir):
    """Deletes the previous run's files (only the names mmu train writes); returns how many."""
    files = _run_files(out, ckpt_dir)
    for path, _ in files:
        os.remove(path)
    side = os.path.join(out, DATA_SIDECAR)
    if os.path.isfile(side):
        os.remove(side)
    return len(files)


def _check_same_data(out, size, channels):
    side = os.path.join(out, DATA_SIDECAR)
    if not os.path.isfile(side):
        return
    try:
        with open(side) as f:
            was = json.load(f)
    except (OSError, ValueError):
        return
    diff = [f"data.{k}: {was.get(k)!r} in the run, {v!r} now" for k, v in (("size", size), ("channels", channels))
            if k in was and was[k] != v]
    if diff:
        raise UserError(f"--resume: the run in {out!r} loaded its images differently: {'; '.join(diff)}")


def _save_outputs(out, model, history):
    """The model (save_pretrained), history.csv and loss_curves.png (whatever exists) into out."""
    os.makedirs(out, exist_ok=True)
    if model is not None:
        model.eval()
        model.save_pretrained(out)
    if history is not None and len(history):
        history.to_csv(os.path.join(out, "history.csv"))
        history.plot().savefig(os.path.join(out, "loss_curves.png"), dpi=100)


# --------------------------------------------------------------------------- encode / decode
def _load_model(path):
    from . import tokenizers

    if not os.path.isdir(path):
        raise UserError(f"--model: no such folder {path!r}")
    for f in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(path, f)):
            raise UserError(f"--model: {path!r} has no {f} (is it a save_pretrained folder?)")
    base = getattr(tokenizers, "Tokenizer", None)
    if base is None:
        from .nn import Module as base
    model = base.from_pretrained(path)
    model.eval()
    return model


def _model_data(path, model):
    side = {}
    p = os.path.join(path, DATA_SIDECAR)
    if os.path.isfile(p):
        with open(p) as f:
            side = json.load(f)
    cfg = getattr(model, "config", None)
    channels = side.get("channels") or getattr(cfg, "in_channels", None) or 3
    size = side.get("size") or getattr(cfg, "resolution", None) or getattr(cfg, "image_size", None)
    return size, int(channels)


def _image_files(items):
    """The files of `mmu encode`: a folder gives its images by mmu.data.list_images (the rule `mmu train`
    uses: recursive, case-insensitive extensions, hidden files skipped, sorted); a file is taken as given."""
    from .data import list_images

    files = []
    for item in items:
        if os.path.isdir(item):
            found = list_images(item)
            if not found:
                raise UserError(f"no images in folder {item!r}")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise UserError(f"no such file or folder {item!r}")
    return files


def cmd_encode(args):
    import numpy as np

    from .data import iter_image_batches

    files = _image_files(args.images)
    if not args.out.endswith(".npy"):
        raise UserError(f"--out must be a .npy file, got {args.out!r}")
    model = _load_model(args.model)
    size, channels = _model_data(args.model, model)
    size = args.size or size
    if not size:
        raise UserError(f"--model {args.model!r} does not record its image size: pass --size N")
    codes, encoded = [], []
    # streamed: the images are decoded in background threads, 64 at a time, and only the codes are kept
    with _warnings_to_stderr("encode"):
        for paths, x in iter_image_batches(files, int(size), channels, batch_size=64, where="mmu encode"):
            from .compare import as_clips
            x = as_clips(model, x)  # a 3-D (video) tokenizer encodes each image as a still clip
            try:
                codes.append(np.asarray(model.encode(x)))
            except ValueError as e:
                raise UserError(f"cannot encode images of shape {x.shape[1:]}: {e}") from None
            encoded += paths
    codes = np.concatenate(codes)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, codes.astype(np.int64))
    with open(os.path.splitext(args.out)[0] + ".files.txt", "w") as f:
        f.write("\n".join(encoded) + "\n")
    skipped = f" ({len(files) - len(encoded)} unreadable skipped)" if len(encoded) < len(files) else ""
    print(f"encoded {len(encoded)} image(s) at {size} px{skipped} -> {args.out} {tuple(codes.shape)} int64 "
          f"(codebook {getattr(model, 'codebook_size', '?')})")
    return 0


def cmd_decode(args):
    import numpy as np
    from PIL import Image

    if not os.path.isfile(args.codes):
        raise UserError(f"no such file {args.codes!r}")
    try:
        codes = np.load(args.codes, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"cannot read {args.codes!r} as a .npy array: {e}") from None
    if not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"{args.codes}: codes must be integers, got dtype {codes.dtype}")
    model = _load_model(args.model)
    K = getattr(model, "codebook_size", None)
    if codes.ndim < 2:
        raise UserError(f"{args.codes}: codes must have a batch axis, got shape {codes.shape}")
    if codes.size and K is not None and (codes.min() < 0 or codes.max() >= K):
        raise UserError(f"{args.codes}: codes must lie in [0, {K}), got [{codes.min()}, {codes.max()}]")
    codes = np.ascontiguousarray(codes, np.int64)
    try:
        images = np.concatenate([np.asarray(model.decode(codes[i:i + 64])) for i in range(0, len(codes), 64)])
    except ValueError as e:
        raise UserError(f"cannot decode codes of shape {codes.shape}: {e}") from None
    os.makedirs(args.out, exist_ok=True)

    def save(im, name):
        a = np.clip((im + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
        Image.fromarray(a).save(os.path.join(args.out, name))
    for i, im in enumerate(images):
        if im.ndim == 4:  # a clip (C, T, H, W) of a 3-D tokenizer: one file per frame
            for t in range(im.shape[1]):
                save(im[:, t], f"{i:06d}_{t:03d}.png")
        else:
            save(im, f"{i:06d}.png")
    first = "000000_000.png" if images.ndim == 5 else "000000.png"
    kind = "clip(s)" if images.ndim == 5 else "image(s)"
    print(f"decoded {len(images)} {kind} {tuple(images.shape[1:])} -> {args.out}/{first} ...")
    return 0


def _showo_model(path):
    from .models.show_o import ShowO
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"--model: {path!r} holds no config.json (a folder written by mmu showo train)")
    model = ShowO.from_pretrained(path)
    if model.text_tokenizer is None:
        raise UserError(f"--model: {path!r} holds no text tokenizer")
    return model.eval()


def cmd_showo(args):
    """mmu showo train | generate | answer: mmu.models.show_o.tiny from the command line."""
    import numpy as np

    from .models.show_o import tiny
    if args.showo_command == "train":
        try:
            sets = tiny._sets(args.data, "--data")
        except (TypeError, ValueError) as e:
            raise UserError(str(e)) from None
        _check_out_dir(args.out)
        if args.resume and not os.path.isdir(os.path.join(args.out, "checkpoints")):
            raise UserError(f"--resume: no checkpoint in {args.out!r} to continue from")
        _threads(args)
        with _warnings_to_stderr("showo train"):
            run = tiny.train_show_o_tiny(sets, steps=args.steps, tokenizer_steps=args.tokenizer_steps,
                                         batch_size=args.batch_size, dim=args.dim, num_layers=args.layers,
                                         size=args.size, downsample=args.downsample, codebook_size=args.codebook_size,
                                         tokenizer_quantizer=args.tokenizer_quantizer,
                                         seed=args.seed, out=args.out, resume=args.resume,
                                         progress=not args.quiet, verbose=True)
        print(f"saved to {args.out}; mmu showo generate --model {args.out} --prompt '...' --out DIR writes images; "
              f"python benchmarks/eval_show_o_tiny.py --sets {','.join(sets)} --model {args.out} judges it")
        return 0 if run is not None else 1
    if args.showo_command == "generate":
        from PIL import Image

        import mmu
        model = _showo_model(args.model)
        prompts = [p for p in args.prompt for _ in range(args.num_samples)]
        codes = model.t2i_generate(prompts, steps=args.steps, guidance_scale=args.guidance_scale,
                                   generator=mmu.Generator(args.seed))
        images = tiny.decode_images(model, codes)
        os.makedirs(args.out, exist_ok=True)
        for i, im in enumerate(images):
            a = np.clip((im + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
            a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
            Image.fromarray(a).save(os.path.join(args.out, f"{i // args.num_samples:03d}_{i % args.num_samples:03d}.png"))
        print(f"wrote {len(images)} image(s) -> {args.out}/000_000.png ...")
        return 0
    if args.showo_command == "answer":
        from .data import iter_image_batches
        model = _showo_model(args.model)
        if not os.path.isfile(args.image):
            raise UserError(f"--image: no such file {args.image!r}")
        ch = int(model.image_tokenizer.config.in_channels)
        batches = list(iter_image_batches([args.image], tiny.image_size(model), ch, batch_size=1,
                                          where="mmu showo answer"))
        if not batches:
            raise UserError(f"--image: cannot read {args.image!r} as an image")
        # up to 8 tokens, within the positions the model has ([MMU][SOI] image [EOI][SOT] question answer)
        cfg = model.config
        room = cfg.max_seq_len - cfg.num_vq_tokens - 4 - len(model.text_tokenizer.encode(args.question))
        if room < 1:
            raise UserError(f"--question: too long for the model's {cfg.max_seq_len} positions")
        ids = model.mmu_generate([args.question], images=batches[0][1], max_new_tokens=min(8, room)).numpy()[0]
        print(model.text_tokenizer.decode([int(t) for t in ids if 0 <= t < model.config.llm_vocab_size]))
        return 0
    raise UserError("mmu showo: give an action: train, generate or answer")


def _vila_u_run(path):
    from .models.vila_u import tiny
    if not os.path.isfile(os.path.join(path, tiny.RUN_FILE)):
        raise UserError(f"--model: {path!r} holds no {tiny.RUN_FILE} (a folder written by mmu vila-u train)")
    return tiny.load_vila_u_tiny(path)


def cmd_vila_u(args):
    """mmu vila-u train | generate | answer: mmu.models.vila_u.tiny from the command line."""
    import numpy as np

    from .models.vila_u import tiny
    if args.vila_command == "train":
        try:
            sets = tiny._sets(args.data, "--data")
        except (TypeError, ValueError) as e:
            raise UserError(str(e)) from None
        _check_out_dir(args.out)
        if args.resume and not os.path.isdir(os.path.join(args.out, "checkpoints")):
            raise UserError(f"--resume: no checkpoint in {args.out!r} to continue from")
        if args.tower_steps < 2:
            raise UserError("--tower-steps: at least 2 (stage 'align' then stage 'tower')")
        _threads(args)
        with _warnings_to_stderr("vila-u train"):
            tiny.train_vila_u_tiny(sets, steps=args.steps, tower_steps=args.tower_steps, batch_size=args.batch_size,
                                   dim=args.dim, num_layers=args.layers, seed=args.seed, out=args.out,
                                   resume=args.resume, progress=not args.quiet, verbose=True)
        print(f"saved to {args.out}; mmu vila-u generate --model {args.out} --prompt '...' --out DIR writes images")
        return 0
    if args.vila_command == "generate":
        from PIL import Image
        run = _vila_u_run(args.model)
        images = tiny.generate_images(run, args.prompt, args.num_samples, cfg_scale=args.cfg_scale, seed=args.seed)
        os.makedirs(args.out, exist_ok=True)
        for i, im in enumerate(images):
            a = np.clip((im + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
            a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
            name = f"{i // args.num_samples:03d}_{i % args.num_samples:03d}.png"
            Image.fromarray(a).save(os.path.join(args.out, name))
        print(f"wrote {len(images)} image(s) -> {args.out}/000_000.png ...")
        return 0
    if args.vila_command == "answer":
        from .data import iter_image_batches
        run = _vila_u_run(args.model)
        if not os.path.isfile(args.image):
            raise UserError(f"--image: no such file {args.image!r}")
        batches = list(iter_image_batches([args.image], tiny.SIZE, run.channels, batch_size=1,
                                          where="mmu vila-u answer"))
        if not batches:
            raise UserError(f"--image: cannot read {args.image!r} as an image")
        print(tiny.answer_images(run, batches[0][1], args.question)[0])
        return 0
    raise UserError("mmu vila-u: give an action: train, generate or answer")


# --------------------------------------------------------------------------- main
def _threads(args):
    if getattr(args, "threads", None):
        import mmu
        mmu.set_num_threads(args.threads)


COMMANDS = {"compare": cmd_compare, "train": cmd_train, "generate": cmd_generate, "encode": cmd_encode,
            "decode": cmd_decode, "showo": cmd_showo,
            "vila-u": cmd_vila_u}


def _rank():
    """This process's MPI rank (0 outside mpirun); initialises mmu.distributed."""
    from . import distributed
    distributed.init()
    return distributed.get_rank()


def _abort_other_ranks(command):
    """mpirun: a rank that stops on an error ends the whole job (MPI_Abort), since the other ranks would
    wait for it in their next collective until mmu.distributed's timeout."""
    from . import distributed
    if distributed.is_initialized() and distributed.get_world_size() > 1:
        sys.stderr.flush()
        distributed.abort(f"mmu {command}: stopped on rank {distributed.get_rank()}; ending every rank")


def _barrier():
    """mpirun: every rank waits here until all arrive (rank 0 has written what the next command reads)."""
    from . import distributed
    if distributed.is_initialized() and distributed.get_world_size() > 1:
        distributed.barrier()


def _run_distributed(command):
    """`mpirun -np N mmu train|compare ...`: every rank runs the command data parallel (the Trainer's
    automatic mode); rank 0 alone prints to stdout and writes (the others' stdout goes to /dev/null;
    their errors still reach stderr)."""
    if _rank() != 0:
        sys.stdout = open(os.devnull, "w")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "demo":  # the demo parses its own options
        from . import demo
        return demo.main(argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # let the subcommand's parser complain, so its usage line is the one shown
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        target = sub.choices.get(args.command, parser) if sub is not None and args.command else parser
        target.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "info":
        import numpy as np

        import mmu
        print(f"mmu {mmu.__version__}  numpy {np.__version__}  oneDNN {mmu._C.dnnl_version()}  "
              f"threads {mmu.get_num_threads()}")
        return 0
    if args.command in ("train", "compare") and not getattr(args, "list", False) \
            and not getattr(args, "example_config", False):
        _run_distributed(args.command)
    if args.command in COMMANDS:
        try:
            return COMMANDS[args.command](args)
        except KeyboardInterrupt:
            print(f"mmu {args.command}: interrupted", file=sys.stderr)
            return 130
        except (UserError, OSError, ValueError) as e:
            # a user's mistake (or a library check on the user's input): one line, no traceback
            if os.environ.get("MMU_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"mmu {args.command}: error: {msg}", file=sys.stderr)
            _abort_other_ranks(args.command)
            return 1
    parser.print_help()
    return 0 if not argv else 2


if __name__ == "__main__":
    sys.exit(main())
