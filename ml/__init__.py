"""Transfer-learned butterfly classifiers, with no Django in sight.

The web application calls a narrow interface: `ml.predict.Predictor` and `ml.images` to
classify, `ml.retrain` to retrain from staff labels.
"""
