"""One module per wire protocol: ``openai`` (and every OpenAI-compatible server),
``anthropic``, ``offline`` demo models, ``local`` in-process models, and
``discovery`` of local servers.

``providers.base.Provider`` is the class a plugin subclasses (see
``extensions/notebook-llm-reverse``); :func:`notebook_llm.list_providers`
lists every provider, built-in or plugged in.
"""
