"""Native code the models call on the CPU (``onednn``: oneDNN convolutions through ``jax.ffi``)."""
