"""Transfer-learned butterfly classifiers, with no Django in sight.

The web application calls a narrow interface: `ml.predict.Predictor` and `ml.images` to
classify, `ml.identify.Identifier` for the one answer per photo, `ml.species` for the
catalogue, and `ml.retrain` to retrain from staff labels.
"""
