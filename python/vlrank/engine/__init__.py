"""The engine: the model side of vlrank, one concept per module.

``manifest`` (an exported directory's typed ``vlrank.json``), ``export_cache`` (checkpoints exported once),
``tokenizers`` (one native tokenizer per file), ``sessions`` (ONNX Runtime providers and sessions),
``vision`` (the vision tower and its per-call image cache), ``prompt_ids`` (prompt ids with context
advice) and ``runner`` (token-budgeted decoder batches). Tasks (``vlrank.tasks``) put them together.
"""
