"""History: the trainer's log (one dict per logged step), with plotting and CSV export."""
import csv
import math
import numbers

import numpy as np

__all__ = ["History"]

# keys that are bookkeeping, not curves worth a panel by default
_NOT_PLOTTED = ("step", "time")


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class History:
    """The records of a training run: a list of dicts, each with "step" and whatever was measured then
    (loss, each loss term, psnr, usage, perplexity, lr, grad_norm, time; eval_psnr / eval_usage /
    eval_perplexity at evaluation steps). Records are ordered by step; one step has one record (an
    evaluation at a logged step adds its keys to that step's record)."""

    def __init__(self, records=None):
        self.records = []
        for r in records or []:
            self.log(r)

    # ------------------------------------------------------------------ recording
    def log(self, record):
        """Adds a record (a dict with an int "step"); merges it into the last record when the step is the same."""
        if not isinstance(record, dict):
            raise TypeError(f"History.log: a record must be a dict, got {type(record).__name__}")
        step = record.get("step")
        if not isinstance(step, numbers.Integral) or isinstance(step, bool):
            raise ValueError(f"History.log: a record needs an int 'step', got {step!r}")
        record = {k: (float(v) if isinstance(v, (np.floating, np.integer)) and k != "step" else v)
                  for k, v in record.items()}
        record["step"] = int(step)
        if self.records and self.records[-1]["step"] == record["step"]:
            self.records[-1].update(record)
        else:
            self.records.append(record)
        return self.records[-1]

    @property
    def last(self):
        """The latest record (a dict), or None before anything was logged."""
        return self.records[-1] if self.records else None

    def keys(self):
        """Every key that occurs in a record, in first-seen order."""
        seen = {}
        for r in self.records:
            for k in r:
                seen.setdefault(k, None)
        return list(seen)

    def series(self, key):
        """(steps, values) as NumPy arrays over the records that have `key`."""
        rows = [(r["step"], r[key]) for r in self.records if key in r and _is_number(r[key])]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        s, v = zip(*rows)
        return np.asarray(s, np.int64), np.asarray(v, np.float64)

    def __getitem__(self, key):
        """history["loss"] -> the values of that key (NumPy float64), in step order."""
        if key not in self.keys():
            raise KeyError(f"History has no key {key!r} (keys: {self.keys()})")
        return self.series(key)[1]

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    # ------------------------------------------------------------------ output
    def plot(self, keys=None, ax=None):
        """Plots the curves with matplotlib and returns the Figure.

        keys: a key or a list of keys (default: every numeric key but step and time). Without `ax`,
        each key gets its own panel and an eval_<key> series shares the panel of <key>; with `ax`, all
        keys are drawn on that one Axes. matplotlib is imported here; without `ax` the figure is a
        matplotlib.figure.Figure made without pyplot (works with any backend; fig.savefig(path) to write it)."""
        from matplotlib.axes import Axes
        all_keys = [k for k in self.keys() if k not in _NOT_PLOTTED
                    and any(_is_number(r.get(k)) for r in self.records)]
        if keys is None:
            keys = all_keys
        elif isinstance(keys, str):
            keys = [keys]
        else:
            keys = list(keys)
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"History.plot: keys must be strings, got {k!r}")
            if k not in self.keys():
                raise KeyError(f"History.plot: no key {k!r} in the history (keys: {all_keys})")
        if ax is not None:
            if not isinstance(ax, Axes):
                raise TypeError(f"History.plot: ax must be a matplotlib Axes, got {type(ax).__name__}")
            for k in keys:
                s, v = self.series(k)
                ax.plot(s, v, label=k, marker="o" if len(s) < 3 else None)
            ax.set_xlabel("step")
            if keys:
                ax.legend()
            return ax.figure
        # group eval_<k> with <k> when both are plotted
        panels = []
        for k in keys:
            if k.startswith("eval_") and k[5:] in keys:
                continue
            group = [k] + ([f"eval_{k}"] if f"eval_{k}" in keys else [])
            panels.append(group)
        # a bare Figure, not pyplot: no global figure list to leak into, no backend needed, and a notebook
        # shows the returned figure once
        from matplotlib.figure import Figure
        n = max(1, len(panels))
        ncols = min(3, n)
        nrows = math.ceil(n / ncols)
        fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        flat = axes.ravel()
        for a, group in zip(flat, panels):
            for k in group:
                s, v = self.series(k)
                a.plot(s, v, label=k, marker="o" if len(s) < 3 else None)
            a.set_title(group[0])
            a.set_xlabel("step")
            if len(group) > 1:
                a.legend()
            if group[0] in ("loss", "lr") or group[0].endswith("_loss"):
                vals = np.concatenate([self.series(k)[1] for k in group])
                if vals.size and np.all(vals > 0):
                    a.set_yscale("log")
        for a in flat[len(panels):]:
            a.axis("off")
        fig.tight_layout()
        return fig

    def to_csv(self, path):
        """Writes the records as CSV: a column per key (step first), empty cells where a record lacks a key."""
        keys = self.keys()
        if "step" in keys:
            keys.remove("step")
            keys.insert(0, "step")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for r in self.records:
                w.writerow(["" if r.get(k) is None else r[k] for k in keys])
        return path

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """{'records': [dict, ...]}: the logged records, for a checkpoint."""
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state_dict):
        """Replaces the records by those of a state_dict() (ValueError on anything else)."""
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("records"), (list, tuple)):
            raise ValueError("History.load_state_dict: expected {'records': [dict, ...]} (History.state_dict())")
        new = History(state_dict["records"])
        self.records = new.records

    def __repr__(self):
        if not self.records:
            return "History(0 records)"
        first, last = self.records[0]["step"], self.records[-1]["step"]
        shown = []
        for k, v in self.last.items():
            if k == "step" or not _is_number(v):
                continue
            if k == "time":
                shown.append(f"time={v:.1f}s")
            elif k == "lr":
                shown.append(f"lr={v:.3g}")
            else:
                shown.append(f"{k}={v:.4g}")
        return (f"History({len(self.records)} records, steps {first}..{last}; last: "
                + ", ".join(shown) + ")")
