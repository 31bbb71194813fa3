"""Wire shapes as frozen msgspec Structs: models, predictions, errors, and the naming of keys."""
