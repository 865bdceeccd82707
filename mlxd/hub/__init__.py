"""The Hugging Face hub, without MLX: one module per concern, each imported by name.

- ``names``: repo ids, revisions and commits; parsing ``ORG/NAME[@REVISION]`` (stdlib only).
- ``environment``: what the hub library sees (endpoint, cache folder, offline, token
  presence) and how a daemon's differs from this process's.
- ``errors``: ``HubError`` and the mapping of the hub library's errors to one line.
- ``cache``: the shared HF cache: its folders and refs, what is there, disk use, deletes.
- ``preflight``: everything that can refuse a pull before any weight moves.
- ``verify``: hashing a file against the hub's own hash, while it arrives or after.
- ``pull``: the verified pull into the HF cache, and fetching a pulled model on another host.
- ``push``: uploading a model folder with its card.

Nothing here is imported by ``mlxd.hub`` itself, and ``huggingface_hub`` only inside the
functions that use it: read commands import this package for free.
"""
