"""Training: the recipe (:mod:`.config`, help text in field metadata), length-grouped batching
(:mod:`.batching`), cluster ids (:mod:`.cluster`), the trainer (:mod:`.trainer`), its resume state
(:mod:`.resume`), the routing offsets fitted after training (:mod:`.calibration`) and fleet changes
without retraining (:mod:`.fleet`).
"""
