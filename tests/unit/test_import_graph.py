"""No import cycles between modules of `src/shelfwise`, imports under TYPE_CHECKING and
function-local imports included (grimp reads them all), and none dodged with either.

The layer contracts themselves run in `make lint` (`lint-imports`); this test checks the
whole package, which those contracts cannot express while packages still import each
other both ways.
"""

from __future__ import annotations

import grimp

# Cycles in code other work is still changing (issue 14's report names them); delete an
# entry once its cycle is broken. Never add one: break the cycle instead.
KNOWN_CYCLES = {
    frozenset({"shelfwise.cli", "shelfwise.observability.dbtop"}),
    frozenset({"shelfwise.drills.base", "shelfwise.drills.system"}),
}


def _cycles(graph: grimp.ImportGraph) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("shelfwise", cache_dir=None)
    cycles = _cycles(graph)
    assert cycles - KNOWN_CYCLES == set(), sorted(sorted(c) for c in cycles - KNOWN_CYCLES)
