"""VILA-U-tiny's judged accuracies (issue 14 item 6): trains mmu.models.vila_u.train_vila_u_tiny (or reads a
folder written by `mmu vila-u train`) and judges what it draws, says and classifies. The judges live here,
never in mmu; every image judged is held out (the test splits: never trained on by the tower or VILAU).

- digits, text -> image: for each digit d, `samples_per_prompt` images generated from "a handwritten <word>"
  (VILAU.generate_images: CFG at the model's cfg_scale unless given, VILA-U's top-k / top-p, seeded),
  decoded by the tower's decoder and classified by a scikit-learn LogisticRegression fitted on the REAL
  training digits at 16 px: the share classified as d. The judge's own accuracy on the real held-out
  digits is reported beside it.
- digits, image -> text: "what digit is this?" on every held-out digit (359), greedy on the KV cache; right
  when the answer is exactly the digit's word.
- digits, tower zero-shot: mmu.models.vila_u.zero_shot_accuracy of the held-out digits against the ten
  prompts "a handwritten <word>" (quantized features, as the paper); PSNR / SSIM of the tower's
  reconstructions of them.
- shapes, text -> image: one image per held-out scene (captioned_shapes' test split), generated from its
  caption and judged by mmu.data.judge_shapes (colour, shape, both).
- the recipe comparison (--recipe): the same tower trained on the same budget by 'align_tower' (the paper's:
  align, then tower with the text encoder frozen) and 'joint' (both losses from scratch): zero-shot
  accuracy and PSNR side by side.

    python benchmarks/eval_vila_u_tiny.py                     # train digits with the defaults, judge
    python benchmarks/eval_vila_u_tiny.py --model run/ --cfg-scales 1,1.5,2,3    # judge a folder, tune CFG
    python benchmarks/eval_vila_u_tiny.py --recipe-only       # the recipe table
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mmu  # noqa: E402
from mmu import data as mdata  # noqa: E402
from mmu.data.captioned import DIGIT_WORDS  # noqa: E402
from mmu.models.vila_u import digit_prompts, tower_data, tower_metrics, train_recipe, zero_shot_accuracy  # noqa: E402
from mmu.models.vila_u import tiny  # noqa: E402

AIMS = {"digits_t2i": 0.90, "digits_answer": 0.95, "digits_zero_shot": 0.95}


def digit_judge(seed=0):
    """A scikit-learn LogisticRegression (C 0.1) fitted on the real training digits at 16 px -> (judge, its
    accuracy on the real held-out digits)."""
    from sklearn.linear_model import LogisticRegression
    train, test = mdata.captioned_digits(16, "train", seed), mdata.captioned_digits(16, "test", seed)
    judge = LogisticRegression(max_iter=2000, C=0.1)
    judge.fit(train.images.reshape(len(train), -1), train.labels)
    return judge, float(judge.score(test.images.reshape(len(test), -1), test.labels))


def judge_digits_t2i(run, judge, samples_per_prompt=10, cfg_scale=None, seed=0):
    """-> (share of generated digits the judge reads as their prompt's digit, per-digit shares, count)."""
    prompts = [f"a handwritten {w}" for w in DIGIT_WORDS]
    images = tiny.generate_images(run, prompts, samples_per_prompt, cfg_scale=cfg_scale, seed=seed)
    images = tiny.tiny_images(images, 1)
    want = np.repeat(np.arange(10), samples_per_prompt)
    pred = judge.predict(images.reshape(len(images), -1))
    return float((pred == want).mean()), [float((pred[want == d] == d).mean()) for d in range(10)], len(want)


def evaluate_vila_u_tiny(run, samples_per_prompt=10, cfg_scale=None, num_questions=None, num_shapes=None, seed=0):
    """Judges a VILA-U-tiny run (module docstring) -> dict of floats in [0, 1] and the counts they are over.
    The test splits are those of the run's seed (run.seed drew its train / test splits); `seed` seeds the
    sampling only."""
    data_seed, out = run.seed, {}
    if "digits" in run.sets:
        judge, out["digits_judge_heldout"] = digit_judge(data_seed)
        test = mdata.captioned_digits(16, "test", data_seed)
        out["digits_t2i"], out["digits_t2i_per_digit"], out["digits_t2i_images"] = judge_digits_t2i(
            run, judge, samples_per_prompt, cfg_scale, seed)
        n = len(test) if num_questions is None else min(int(num_questions), len(test))
        said = tiny.answer_images(run, test.images[:n], tiny.DIGIT_QUESTION)
        out["digits_answer"] = float(np.mean([s == DIGIT_WORDS[y] for s, y in zip(said, test.labels[:n])]))
        out["digits_answer_questions"] = n
        x = tiny.tiny_images(test.images, run.channels)
        tower = run.model.tower
        out["digits_zero_shot"] = zero_shot_accuracy(tower, x, test.labels, digit_prompts())
        out["digits_zero_shot_images"] = len(x)
        m = tower_metrics(tower, x)
        out["digits_tower_psnr"], out["digits_tower_ssim"] = m["psnr"], m["ssim"]
    if "shapes" in run.sets:
        test = mdata.captioned_shapes(size=16, split="test", seed=data_seed)
        n = len(test) if num_shapes is None else min(int(num_shapes), len(test))
        images = tiny.generate_images(run, list(test.captions[:n]), cfg_scale=cfg_scale, seed=seed + 1)
        verdict = mdata.judge_shapes(tiny.tiny_images(images, 3), test.scenes[:n])
        out["shapes_colour"], out["shapes_shape"] = float(verdict["colour"].mean()), float(verdict["shape"].mean())
        out["shapes_colour_shape"] = float((verdict["colour"] & verdict["shape"]).mean())
        out["shapes_scenes"] = n
    return out


def recipe_comparison(steps=1200, seed=0, align_tower=None, batch_size=64, lr=1e-3):
    """The tower of train_vila_u_tiny trained on the captioned digits by each recipe on the same budget of
    `steps` AdamW steps -> {recipe: {"zero_shot", "psnr", "ssim", "code_usage", "seconds"}} on the held-out
    digits. align_tower: an already trained 'align_tower' tower of that budget (a run's model.tower) to
    measure instead of training it again."""
    train = mdata.captioned_digits(16, "train", seed)
    test = mdata.captioned_digits(16, "test", seed)
    out = {}
    for recipe in ("align_tower", "joint"):
        start = time.perf_counter()
        if recipe == "align_tower" and align_tower is not None:
            tower, seconds = align_tower, None
        else:
            mmu.manual_seed(seed)
            tower = tiny.tiny_tower("digits")
            train_recipe(tower, tower_data(train, tower), recipe, steps, batch_size=batch_size, lr=lr, seed=seed)
            seconds = time.perf_counter() - start
        x = tiny.tiny_images(test.images, tower.config.in_channels)
        m = tower_metrics(tower, x)
        out[recipe] = {"zero_shot": zero_shot_accuracy(tower, x, test.labels, digit_prompts()),
                       "zero_shot_continuous": zero_shot_accuracy(tower, x, test.labels, digit_prompts(),
                                                                  quantized=False),
                       "psnr": m["psnr"], "ssim": m["ssim"], "code_usage": m["code_usage"], "seconds": seconds,
                       "images": len(x), "steps": steps}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default="digits", help="digits, shapes or digits,shapes (default digits)")
    p.add_argument("--model", metavar="DIR", help="judge a folder of `mmu vila-u train` instead of training")
    p.add_argument("--steps", type=int, default=None, help="VILAU steps (default: train_vila_u_tiny's)")
    p.add_argument("--tower-steps", type=int, default=None, help="tower steps (default: train_vila_u_tiny's)")
    p.add_argument("--samples-per-prompt", type=int, default=10)
    p.add_argument("--cfg-scales", default=None, help="comma-separated CFG scales to judge the digits at")
    p.add_argument("--recipe", action="store_true", help="also the recipe comparison (trains a 'joint' tower)")
    p.add_argument("--recipe-only", action="store_true", help="only the recipe comparison")
    p.add_argument("--seed", type=int, default=0, help="the training seed (it draws the splits too)")
    p.add_argument("--sample-seed", type=int, default=0, help="the sampling seed of the judged generations")
    p.add_argument("--json", metavar="FILE", help="write the results there too")
    args = p.parse_args(argv)
    results = {"load": os.getloadavg()[0]}
    run = None
    if not args.recipe_only:
        if args.model:
            run = tiny.load_vila_u_tiny(args.model)
        else:
            kw = {k: v for k, v in (("steps", args.steps), ("tower_steps", args.tower_steps)) if v is not None}
            run = tiny.train_vila_u_tiny(args.sets.split(","), seed=args.seed, verbose=True, **kw)
        results["seconds"] = run.seconds
        start = time.perf_counter()
        results["metrics"] = evaluate_vila_u_tiny(run, args.samples_per_prompt, seed=args.sample_seed)
        results["eval_seconds"] = time.perf_counter() - start
        if args.cfg_scales and "digits" in run.sets:
            judge, _ = digit_judge(run.seed)
            results["cfg_sweep"] = {s: judge_digits_t2i(run, judge, args.samples_per_prompt, float(s),
                                                        args.sample_seed)[0] for s in args.cfg_scales.split(",")}
    if args.recipe or args.recipe_only:
        tower = run.model.tower if run is not None and run.tower_history is not None and "digits" in run.sets \
            and run.channels == 1 else None
        results["recipe"] = recipe_comparison(args.tower_steps or 1200, args.seed, align_tower=tower)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    for k, aim in AIMS.items():
        v = results.get("metrics", {}).get(k)
        if v is not None:
            print(f"{k:20} {v:.3f}  aim >= {aim:.2f}  {'met' if v >= aim else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
