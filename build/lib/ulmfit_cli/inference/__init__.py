"""Using trained models: the classifier and ensemble, text generation, export bundles and evaluation."""
