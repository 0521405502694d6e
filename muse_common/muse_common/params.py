"""Declaring parameters with descriptions, the way every MUSE node does."""

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def declare(node, name, default, description, *, read_only=False, min_value=None,
            max_value=None, choices=None):
    """Declare one parameter with a description (and a range or choices where given)."""
    if choices:
        description = f'{description} One of: {", ".join(map(str, choices))}.'
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if min_value is not None and max_value is not None:
        if isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(min_value), to_value=float(max_value), step=0.0)]
        elif isinstance(default, int) and not isinstance(default, bool):
            descriptor.integer_range = [IntegerRange(
                from_value=int(min_value), to_value=int(max_value), step=1)]
    value = node.declare_parameter(name, default, descriptor).value
    if choices and value not in choices:
        raise ValueError(
            f'parameter {name!r} of node {node.get_name()!r} is {value!r}; expected one of {list(choices)}')
    return value
