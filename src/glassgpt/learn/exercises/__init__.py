"""The exercises, one module each, in the order a person builds a GPT."""
