"""mmu.models: the models beyond the three conv tokenizers, one folder each (config.py, model.py,
convert.py). This minimal package file is the converter slice's; the models slice's fuller
__init__ (register / get / available) replaces it."""
