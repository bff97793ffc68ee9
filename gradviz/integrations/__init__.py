"""gradviz in the tools people already use: transformers' and Lightning's ``Trainer``
callbacks, TensorBoard.

Each module imports its optional package (an extra: ``gradviz[hf]``, ``gradviz[lightning]``,
``gradviz[tensorboard]``) when it is imported or called, so gradviz installs and runs
without them, and says in one line which extra to install where one is missing.
"""
