"""Cycles in an import graph: groups of modules that import each other, directly or through
others (strongly connected components with more than one module, or a module importing
itself)."""

from __future__ import annotations

from collections.abc import Collection, Mapping


def import_cycles(imports: Mapping[str, Collection[str]]) -> list[list[str]]:
    """Each group of modules that import each other, sorted; the groups sorted too.
    `imports` maps a module to the modules it imports (any not in it import nothing)."""
    # Tarjan's algorithm: one depth-first walk; a module whose walk cannot reach back above
    # itself closes a component with everything still on the stack above it.
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(imports.get(module, ())):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or module in imports.get(module, ()):
                cycles.append(sorted(component))

    for module in sorted(imports):
        if module not in order:
            visit(module)
    return sorted(cycles)
