"""Attack chains in the default matrix (`bench.registry.Chain`): what a thief does with the copy it stole.
On an embedding service (VLPMarker) the thief never holds the owner's weights, so its weight attacks can
only act on its own stolen copy; the same chains run on every model kind for comparison. The extraction
stage runs at the largest query budget (its strongest), and is shared with the `extraction` rows."""
from bench.registry import register_chain

register_chain("extraction>fine_tuning:all_layers")
register_chain("extraction>pruning:0.5")
