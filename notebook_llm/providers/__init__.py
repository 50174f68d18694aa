"""One module per wire protocol: openai (and every OpenAI-compatible server),
anthropic, offline demo models and local in-process GGUF models."""
