"""Render a model's own chat template safely: Jinja's immutable sandbox, plus a budget.

A GGUF carries its chat template as Jinja source, written by whoever made the file. The immutable sandbox stops it
from reaching Python internals or changing its inputs; the budget stops it from looping for ever
(`{% for a in range(99999) %}{% for b in range(99999) %}`), building huge strings or rendering megabytes. A
template over budget raises TemplateRefused, which callers turn into a model refusal (exit 3).

The engine process renders with this module; `models import`/`verify` render a sample conversation with it up
front, so a hostile template is flagged before anyone asks a question.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_ITERATIONS = 200_000  # range() items summed over the whole render
MAX_OUTPUT = 1_000_000  # characters of rendered prompt
MAX_STRING = 1_000_000  # characters a single `*` or `+` may produce
MAX_SECONDS = 2.0

SAMPLE = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "How do I purify water?"},
    {"role": "assistant", "content": "Boil it for one minute."},
    {"role": "user", "content": "And at altitude?"},
]


class TemplateRefused(Exception):
    """The template broke the sandbox's rules or its budget; the message says how."""


class _IgnoreGeneration(jinja2.ext.Extension):
    """Hugging Face's `{% generation %}` tag: render its body as plain text."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Budget:
    def __init__(self, seconds: float):
        self.iterations = 0
        self.deadline = time.monotonic() + seconds

    def tick(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > MAX_ITERATIONS:
            raise TemplateRefused(f"chat template loops more than {MAX_ITERATIONS} times")
        if self.iterations % 256 == 0 and time.monotonic() > self.deadline:
            raise TemplateRefused("chat template takes too long to render")

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateRefused("chat template takes too long to render")


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "+", "**"})

    budget: _Budget | None = None

    def call_binop(self, context, operator, left, right):
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise TemplateRefused("chat template computes an oversized power")
            return super().call_binop(context, operator, left, right)
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
                    if len(sequence) * max(times, 0) > MAX_STRING:
                        raise TemplateRefused("chat template builds an oversized string")
        if operator == "+" and isinstance(left, (str, list)) and isinstance(right, (str, list)):
            if len(left) + len(right) > MAX_STRING:
                raise TemplateRefused("chat template builds an oversized string")
        return super().call_binop(context, operator, left, right)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateRefused(f"chat template raised an error: {str(message)[:200]}")


class ChatTemplate:
    """A compiled template. `render(messages)` returns the prompt text, ending with the assistant's turn opener."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", seconds: float = MAX_SECONDS):
        self.seconds = seconds
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.env = _BudgetedEnvironment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_IgnoreGeneration, jinja2.ext.loopcontrols])
        self.env.filters["tojson"] = _tojson
        self.env.globals["range"] = self._range
        self.env.globals["raise_exception"] = _raise_exception
        self.env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
        try:
            self.template = self.env.from_string(source)
        except jinja2.TemplateError as exc:
            raise TemplateRefused(f"chat template does not compile: {exc}") from None
        except RecursionError:
            raise TemplateRefused("chat template nests too deeply") from None

    def _range(self, *args: int) -> Any:
        values = range(*args)
        budget = self.env.budget
        if budget is not None:
            budget.tick(0)
        return _CountedRange(values, budget)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        self.env.budget = budget = _Budget(self.seconds)
        pieces: list[str] = []
        size = 0
        try:
            for piece in self.template.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                                bos_token=self.bos_token, eos_token=self.eos_token):
                size += len(piece)
                if size > MAX_OUTPUT:
                    raise TemplateRefused(f"chat template renders more than {MAX_OUTPUT} characters")
                budget.tick()
                budget.check_time()
                pieces.append(piece)
        except TemplateRefused:
            raise
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateRefused(f"chat template tried something the sandbox forbids ({exc})") from None
        except RecursionError:
            raise TemplateRefused("chat template recurses too deeply") from None
        except MemoryError:
            raise TemplateRefused("chat template ran out of memory") from None
        except Exception as exc:  # noqa: BLE001 - a template is data: any failure is a refusal, never a traceback
            raise TemplateRefused(f"chat template failed to render ({type(exc).__name__}: {str(exc)[:200]})") from None
        finally:
            self.env.budget = None
        return "".join(pieces)


class _CountedRange:
    """range() whose iteration counts against the render's budget."""

    def __init__(self, values: range, budget: _Budget | None):
        self.values = values
        self.budget = budget

    def __iter__(self):
        for value in self.values:
            if self.budget is not None:
                self.budget.tick()
            yield value

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):
        return self.values[index]


@contextmanager
def memory_cap(extra_bytes: int = 512 * 1024 * 1024):
    """Cap this process's address space at what it uses now plus `extra_bytes` while the block runs.

    Jinja offers no hook for every way a template can grow memory (`~` joins in a loop over a namespace, say), so
    the kernel enforces it: an allocation past the cap fails, Python raises MemoryError, the render is refused.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        yield
        return
    cap = used + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def check_template(source: str | None, bos_token: str = "", eos_token: str = "") -> None:
    """Render sample conversations in this process; raise TemplateRefused when the template is hostile or broken."""
    if not source:
        return
    template = ChatTemplate(source, bos_token, eos_token)
    with memory_cap():
        template.render(SAMPLE)
        template.render(SAMPLE[:2])


def check_template_isolated(source: str | None, bos_token: str = "", eos_token: str = "",
                            timeout: float = 10.0) -> None:
    """check_template in a child process with a hard deadline: a template cannot hang or exhaust the caller."""
    if not source:
        return
    payload = json.dumps({"template": source, "bos": bos_token, "eos": eos_token})
    try:
        done = subprocess.run([sys.executable, "-m", "appliance.models.chat_template"], input=payload, text=True,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TemplateRefused(f"chat template did not finish rendering within {timeout:.0f} s") from None
    verdict = done.stdout.strip().splitlines()[-1:] or [""]
    try:
        result = json.loads(verdict[0])
    except ValueError:
        raise TemplateRefused(f"chat template check ended abnormally (exit {done.returncode})") from None
    if result.get("refused"):
        raise TemplateRefused(result["refused"])


def _main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        check_template(request["template"], request.get("bos", ""), request.get("eos", ""))
    except TemplateRefused as exc:
        print(json.dumps({"refused": str(exc)}))
        return 0
    print(json.dumps({"refused": None}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
