"""The baselines OneReason-Bench trains on the run's own split: MostPopular, SASRec, TIGER-style and
LC-Rec-style, with the early stopping on valid they share."""
