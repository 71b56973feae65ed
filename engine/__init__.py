"""Bytes on disk: codecs, blocks, segments, the LMDB index and the writer."""
