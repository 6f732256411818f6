"""Checks of the packaged template against what the code reads."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.auth import AuthSettings
from chalicelib.config import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]

# Lambda logical ids of the packaged template, by what they read.
SETTINGS_LAMBDAS = ("APIHandler", "EvaluatePool", "OnInstanceEvent", "OnLifecycleAction", "OnAsgNotification")
AUTHORIZER_LAMBDAS = ("JitsiJwt",)

# Set by the template whatever the code's defaults: names of the stack's own resources.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "APIHandler": (
        "RECORDINGS_BUCKET",
        "RECORDINGS_SSE",
        "ALERTS_TOPIC_ARN",
        "RECORDING_READY_TOPIC_ARN",
        "LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS",
    ),
    **{name: ("ALERTS_TOPIC_ARN", "LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS") for name in SETTINGS_LAMBDAS[1:]},
}


class _Recording(Mapping[str, str]):
    """An empty environment that remembers which names were looked up."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.append(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Reads:
    names: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]  # each: one of these must be set

    def required_names(self) -> set[str]:
        return {name for group in self.required for name in group}


def reads_of(from_env: Callable[[Mapping[str, str]], object]) -> Reads:
    """The variables a settings reader looks up, and those it refuses to go without."""
    env = _Recording()
    try:
        from_env(env)
        message = ""
    except SettingsError as error:
        message = str(error)
    groups = re.findall(r"\b([A-Z][A-Z0-9_]+(?: or [A-Z][A-Z0-9_]+)*) is not set", message)
    required = tuple(sorted({tuple(group.split(" or ")) for group in groups}))
    return Reads(tuple(dict.fromkeys(env.read)), required)


def environ_reads(paths: Iterable[Path]) -> set[str]:
    """Literal names read through os.environ / os.getenv anywhere in these files."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Subscript) and _is_environ(node.value):
                key = node.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    names.add(key.value)
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                getter = isinstance(func, ast.Attribute) and (
                    (func.attr in ("get", "pop", "setdefault") and _is_environ(func.value)) or func.attr == "getenv"
                )
                if getter and isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
    return names


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def code_files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "chalicelib").glob("*.py"))]


def documented_settings(text: str) -> set[str]:
    """Names in the first column of template.md's settings tables (`| `NAME` | ...`)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def env_problems(template: Mapping[str, Any], documented: set[str]) -> list[str]:
    """What the Lambdas would miss: required variables unset, optional ones neither set nor documented."""
    resources = template["Resources"]
    settings, auth = reads_of(Settings.from_env), reads_of(AuthSettings.from_env)
    elsewhere = environ_reads(code_files()) - {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME"}
    wanted: dict[str, tuple[Reads, tuple[str, ...]]] = {}
    for name in SETTINGS_LAMBDAS:
        wanted[name] = (settings, TEMPLATE_SETS.get(name, ()))
    for name in AUTHORIZER_LAMBDAS:
        wanted[name] = (auth, ())
    problems: list[str] = []
    for function, (reads, must_set) in wanted.items():
        variables = resources[function]["Properties"].get("Environment", {}).get("Variables", {})
        for group in sorted({*reads.required, *((name,) for name in must_set)}):
            if not any(name in variables for name in group):
                names = " or ".join(group)
                problems.append(f"{function}: {names} is required but the template does not set it")
        for variable in sorted({*reads.names, *elsewhere} - reads.required_names() - set(must_set)):
            if variable not in variables and variable not in documented:
                problems.append(f"{function}: {variable} is read, not set by the template and not in template.md")
    return problems
