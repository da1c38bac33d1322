"""Transfer-learned butterfly classifiers, with no Django in sight.

The web application talks to this package through `ml.predict.Predictor` only.
"""
