"""Pure metric functions: tensors in, numbers out (no I/O, no logging, no globals)."""
