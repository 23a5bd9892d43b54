"""Voice kinds as plug-ins: clone, frozen, live and custom, one module each, listed in registry.KINDS.

A kind owns its voices-file fields and their checks, how an entry is recognised as it, the models
it needs (by role: base, design, custom), how its voices are prepared and cached
(workshop.prepare_voice, the same at start-up and at run time), its HTTP creation body and its
label on the web page. Everything here imports without torch; the engine loads inside functions.
"""
