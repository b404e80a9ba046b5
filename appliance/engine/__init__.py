"""The engine: llama.cpp in its own process, driven over a socket (see client.py for the flow).

  client.py    Engine, LoadedModel, Generation: what the rest of the appliance uses
  process.py   one engine process: spawn, requests and events, death and hangs turned into one error
  child.py     the engine process itself, the only code that imports llama_cpp
  protocol.py  JSON frames over a Unix socket; model file descriptors passed with SCM_RIGHTS
  template.py  the model's chat template, rendered in Jinja's sandbox with a budget
  variants.py  which llama.cpp build and mode (normal, safe, fallback, baseline), remembered per CPU and model
"""

__all__ = ["Engine", "Generation", "LoadedModel", "Timings"]


def __getattr__(name: str):
    """The client's names, imported when first asked for: the engine process (`python -m appliance.engine.child`)
    imports this package first and needs none of the client's imports (config, the model library, verification)."""
    if name in __all__:
        from appliance.engine import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
