"""Read side: block selection, decoding into Arrow."""
