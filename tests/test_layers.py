"""The package reads one way: data flows text -> speech data -> encoder -> adaptor -> LLM -> speech decoder -> units
-> vocoder -> audio, and a module imports only its own layer and the layers below it, with no cycle anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (  # lowest first; a module belongs to the layer of its longest matching prefix
    ("omni.cli", "omni.config", "omni.atomic", "omni.audio", "omni.augment", "omni.endpoint", "omni.weights",
     "omni.precision", "omni.convert.ctranslate2_whisper", "omni.convert.gguf_llm"),  # foundations, weight converters
    ("omni.encoder", "omni.adaptor", "omni.prompt", "omni.chat"),  # speech in, the LLM's prompt
    ("omni.data", "omni.model"),  # the dataset contract, the speech LLM
    ("omni.units", "omni.decoder_input", "omni.speech_decoder", "omni.hidden_cache", "omni.unit_metrics"),
    ("omni.vocoder",),  # units -> audio
    ("omni.speech_generator", "omni.conversation", "omni.convert.llama_omni"),  # speaking while writing
    ("omni.generate", "omni.serve", "omni.eval", "omni.assets", "omni.tiny"),  # commands, tools
)  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "omni").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The omni modules a file imports anywhere (in functions too), but for type checking only."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("omni."))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.startswith("omni"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in known else node.module)

    Visitor().visit(ast.parse(path.read_text()))
    return {name for name in found if name in known and known[name].name != "__init__.py"}


def layer(name: str) -> int:
    matches = [
        (len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes if name == p or name.startswith(p + ".")
    ]
    assert matches, f"{name}: in no layer of tests/test_layers.py (add it where its imports put it)"
    return max(matches)[1]


def test_no_module_imports_a_layer_above_its_own():
    known = modules()
    upward = [
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, path in known.items()
        if path.name != "__init__.py"
        for dep in imports(path, known)
        if layer(dep) > layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    known = modules()
    graph = {name: imports(path, known) for name, path in known.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif not state.get(dep):
                visit(dep, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
