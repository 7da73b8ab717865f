"""Turning files into vectors: walking, change detection, decoding, and the pipeline that keeps
the model busy. Imports `retrieval`, never `cli`."""
