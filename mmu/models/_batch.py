"""The batch layout the unified models share: a dict of task parts, nested ({"t2i": {"codes": ...}})
or flat ({"t2i.codes": ...}), as ShowO's and VILAU's training_step take it."""

__all__ = ["task_parts"]


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
