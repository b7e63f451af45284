"""Per-clip features for the style extractor and the diffusion stages (`svp data features`)."""
