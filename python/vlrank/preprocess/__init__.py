"""Native preprocessing faces: the typed Python side of the Rust core's image and prompt steps.

``images`` (geometry, header-only token counts, decode + resize + patchify) and ``prompts`` (the exact
prompt ids of the three families). Every caller, the tasks and the tests alike, goes through them.
"""
