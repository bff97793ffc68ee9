"""The Textual app: it renders what :mod:`gradviz.model` holds and asks the session what
is allowed; it never imports torch at module level and never holds a tensor."""
