"""Use-case pipelines composed from the multimodal_ser library."""
