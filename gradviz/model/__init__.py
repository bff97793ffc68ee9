"""What the app shows, as plain Python: the session's state machine, the graph's lane
layout, summaries and views of nodes and parameters, and a training record read back.
No torch, no Textual (a test holds this): the app renders these, the engines fill them."""
