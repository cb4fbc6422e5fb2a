"""The core's architecture holds: no module of `bench/` imports, at module level, a module that imports it
back (type-only imports sit under TYPE_CHECKING, late ones inside functions)."""
import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]


def executed_at_import(statements: list[ast.stmt]):
    """The statements a module runs when imported: not function bodies, not `if TYPE_CHECKING:` blocks."""
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from executed_at_import(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from executed_at_import(getattr(node, field, []))
        for handler in getattr(node, "handlers", []):
            yield from executed_at_import(handler.body)


def module_imports() -> nx.DiGraph:
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "bench").rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        parent = name.rpartition(".")[0]
        if parent in modules and parent != name:  # importing a submodule runs its package first
            graph.add_edge(name, parent)
        for n in executed_at_import(ast.parse(path.read_text()).body):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.startswith("bench"):
                targets = [f"{n.module}.{a.name}" for a in n.names]
                graph.add_edges_from((name, t if t in modules else n.module) for t in targets)
            elif isinstance(n, ast.Import):
                graph.add_edges_from((name, a.name) for a in n.names if a.name in modules)
    graph.remove_edges_from(nx.selfloop_edges(graph))
    return graph.subgraph(modules)


def test_bench_has_no_import_cycle():
    graph = module_imports()
    assert graph.has_edge("bench.runner", "bench.config") and graph.has_edge("bench.kinds.vlp", "bench.kinds")  # found
    assert list(nx.simple_cycles(graph)) == []


def test_model_kinds_live_one_per_file_in_their_folder():
    kinds = {p.stem for p in (ROOT / "bench" / "kinds").glob("*.py")}
    assert {"classifier", "encoder", "vlp", "base", "models"} <= kinds


LOWEST = ("bench.protocols", "bench.registry", "bench.cache", "bench.training", "bench.scoring", "bench.lockfile")
ABOVE = ("bench.kinds", "bench.context", "bench.runner", "bench.report", "bench.claims", "bench.site", "bench.cli",
         "bench.audit", "bench.datasets", "bench.data", "bench.config")


def test_the_lowest_layer_imports_nothing_above_it():
    """The contract, the registry, the cache and the training loop import nothing of kinds, context, runner
    or the read-out, not even inside functions: what they need from above is handed to them."""
    graph = module_imports()
    for low in LOWEST:
        upward = sorted(t for t in nx.descendants(graph, low) if t.startswith(ABOVE))
        assert upward == [], f"{low} reaches {upward}"
        late = [n for n in ast.walk(ast.parse((ROOT / (low.replace('.', '/') + '.py')).read_text()))
                if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith(ABOVE)]
        assert late == [], f"{low} imports {[n.module for n in late]}"
