"""The batch layout the unified models share: a dict of task parts, nested ({"t2i": {"codes": ...}})
or flat ({"t2i.codes": ...}), as ShowO's and VILAU's training_step take it, and the rows of text ids
in them (id_rows)."""

import numpy as np

__all__ = ["task_parts", "id_rows"]


def task_parts(batch, part_keys, fn):
    """A batch -> {task: {name: value}}. part_keys: {task: the names its part may hold}, in the
    model's order. TypeError / KeyError / ValueError naming fn for a batch that is not a dict, a key
    of no task, a name a task does not know, or no part at all."""
    tasks = tuple(part_keys)
    if not isinstance(batch, dict):
        raise TypeError(f"{fn}: a batch is a dict with parts {', '.join(repr(t) for t in tasks)} (or flat keys "
                        f"like '{tasks[0]}.text_ids'), got {type(batch).__name__}")
    parts = {}
    for key, value in batch.items():
        if isinstance(key, str) and key in tasks:
            if not isinstance(value, dict):
                raise TypeError(f"{fn}: batch[{key!r}] must be a dict, got {type(value).__name__}")
            parts.setdefault(key, {}).update(value)
        elif isinstance(key, str) and "." in key and key.split(".", 1)[0] in tasks:
            task, name = key.split(".", 1)
            parts.setdefault(task, {})[name] = value
        else:
            raise KeyError(f"{fn}: unknown batch key {key!r}; the parts are {tasks} (nested dicts or "
                           f"'task.name' keys)")
    if not parts:
        raise ValueError(f"{fn}: the batch has no part")
    for task, part in parts.items():
        unknown = sorted(set(part) - set(part_keys[task]))
        if unknown:
            raise KeyError(f"{fn}: unknown key(s) {unknown} in the {task!r} part (known: {part_keys[task]})")
    return parts


def id_rows(text_ids, fn, name="text_ids", batch=None):
    """Texts -> a list of lists of int: a list of sequences (lists / 1-D arrays) or a 2-D int array
    whose negative entries are padding (dropped)."""
    if hasattr(text_ids, "numpy") and not isinstance(text_ids, np.ndarray):
        text_ids = text_ids.numpy()
    if isinstance(text_ids, np.ndarray):
        if text_ids.ndim != 2 or text_ids.dtype.kind not in "iu":
            raise ValueError(f"{fn}: {name} as an array must be 2-D integer ids (negative = padding), got "
                             f"{text_ids.dtype} {text_ids.shape}")
        rows = [[int(v) for v in r if v >= 0] for r in text_ids]
    elif isinstance(text_ids, (list, tuple)):
        rows = []
        for i, r in enumerate(text_ids):
            if isinstance(r, str):
                raise TypeError(f"{fn}: {name}[{i}] is a str; encode texts with the text tokenizer first")
            a = np.asarray(r.numpy() if hasattr(r, "numpy") and not isinstance(r, np.ndarray) else r)
            if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                raise ValueError(f"{fn}: {name}[{i}] must be a 1-D sequence of int ids, got {a.dtype} {a.shape}")
            rows.append([int(v) for v in a])
    else:
        raise TypeError(f"{fn}: {name} must be a list of id sequences or a 2-D int array, got "
                        f"{type(text_ids).__name__}")
    if batch is not None and len(rows) != batch:
        raise ValueError(f"{fn}: {name} has {len(rows)} rows, the batch has {batch}")
    return rows
