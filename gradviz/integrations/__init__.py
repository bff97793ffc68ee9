"""gradviz in the trainers and tools people already use: transformers' and Lightning's
``Trainer`` callbacks, TensorBoard. The entry layer: each imports its optional
dependency (an extra: ``gradviz[hf]``, ``gradviz[lightning]``, ...) when it is imported."""
