"""Shelter mode: `appliance serve` answers phones and OpenAI clients on loopback or a private network.

A thin caller of the services, like the CLI and the TUI: devices.py (keys, join links), queue.py (one engine, a fair
queue), asking.py (a served question through Conversation.ask), web.py (the Starlette routes and their guard),
openai_api.py (the OpenAI shapes), network.py (addresses, bind, the header timeout, TLS), server.py (bind -> lock
-> load -> uvicorn), static/ (the phone page: every asset in the package).
"""
