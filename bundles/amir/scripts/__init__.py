"""Python pieces of the ``amir`` bundle (AMIR, all-in-one medical image restoration, arXiv 2405.19769)."""
