"""Type predicates shared by the argument checks of mmu.functional (_fn_*.py) and
mmu.nn: Python and NumPy numbers count, bools do not (as torch refuses True for
an int or float argument)."""
import numbers


def is_int(v):
    """An int (numpy integers too), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v):
    """An int or float (numpy ones too), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
