"""LLM annotators: judge backends that label items on the project's scheme."""
