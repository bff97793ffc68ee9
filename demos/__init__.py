"""The built-in demos: scenario files (``gradviz list``) and training scripts to read and copy.

This folder sits at the top of the project so that people find it; it is installed
as the package ``gradviz.demos`` so that ``gradviz demo NAME`` finds it anywhere.
"""
