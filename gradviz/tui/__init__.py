"""The Textual app on top of gradviz.core: widgets take plain data, workers drive torch."""
