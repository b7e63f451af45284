"""Generation: a talking-head video from a portrait, speech and a style (`svp generate`)."""
