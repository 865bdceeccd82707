"""Reading model files without MLX: model folders (config, safetensors headers) and GGUF headers.

The CLI validates a submission with these; only ``mlxd.engine`` loads the weights.
"""
