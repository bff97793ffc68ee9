"""gradviz and other tools: the entry layer's bridges to optional packages (TensorBoard).

Each module here imports its tool inside its functions, so that gradviz installs and
runs without it, and says in one line which extra to install where it is missing.
"""
