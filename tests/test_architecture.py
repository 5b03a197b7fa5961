"""The package's shape: one-way imports, small modules, thin estimators, no reaching
into another module's private attributes."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "daskem"
MAX_MODULE_LINES = 700
MAX_ESTIMATOR_CLASS_LINES = 350
# scikit-learn's own parameter validation, which its estimators call on each other too
ALLOWED_PRIVATE = {"_validate_params"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


MODULES = dict(_modules())


def _resolve(module, is_package, level, name):
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module, path):
    """daskem modules imported by ``module`` anywhere in it (function bodies included).

    Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first, so they count
    too, except the importing module's own packages, which Python has always
    started before it; a name taken from one of those (``from . import name``
    where ``name`` is not a module) is a real dependency on it.
    """
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    found = set()
    for node in ast.walk(tree):
        direct = set()
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module) if node.level else node.module
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            names = [target] + submodules
            if len(submodules) < len(node.names):
                direct.add(target)  # names defined in the target itself
        else:
            continue
        for name in names:
            parts = (name or "").split(".")
            for i in range(1, len(parts) + 1):
                candidate = ".".join(parts[:i])
                if candidate not in MODULES or candidate == module:
                    continue
                if candidate in own_packages and candidate not in direct:
                    continue
                found.add(candidate)
    return found


def test_no_daskem_module_imports_another_in_a_cycle():
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "active"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "active":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_at_most_700_lines(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"


def test_the_gaussian_mixture_class_is_a_thin_front():
    tree = ast.parse((PACKAGE / "gaussian_mixture.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GaussianMixture"]
    body = cls.end_lineno - cls.lineno + 1
    assert body < MAX_ESTIMATOR_CLASS_LINES, f"GaussianMixture's class body has {body} lines"


def test_no_module_touches_private_attributes_of_objects_it_does_not_own():
    offences = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in ALLOWED_PRIVATE:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            offences.append(f"{module}:{node.lineno} .{name}")
    assert not offences, "private attributes reached from outside: " + ", ".join(offences)
