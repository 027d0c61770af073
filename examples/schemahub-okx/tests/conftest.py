from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox, sandbox_factory  # noqa: F401
