"""The torch + networkx layer of gradviz: nothing here imports Textual."""
